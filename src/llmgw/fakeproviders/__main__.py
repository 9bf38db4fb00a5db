"""``python -m llmgw.fakeproviders --port 8089``: serve both fake provider APIs."""

from __future__ import annotations

import argparse

from aiohttp import web

from llmgw.fakeproviders.server import FakeProviders, Faults, create_app


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8089)
    p.add_argument("--latency-ms", type=float, default=0.0, help="added to every call, both providers")
    p.add_argument("--error-rate", type=float, default=0.0, help="share of calls failing with --status")
    p.add_argument("--status", type=int, default=500)
    args = p.parse_args()
    state = FakeProviders()
    for name in state.faults:
        state.faults[name] = Faults(latency_ms=args.latency_ms, error_rate=args.error_rate, status=args.status)
    web.run_app(create_app(state), host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
