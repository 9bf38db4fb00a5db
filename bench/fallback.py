"""What a fallback costs once the breaker is open: primary down vs a healthy primary, one run.

Two gateway stacks in this process, each with its own fake providers at zero latency: in one the
primary (OpenAI) answers; in the other it returns 500 on every call, so after the breaker opens
every request is skipped straight to Anthropic. Calls are interleaved round-robin.

    python -m bench.fallback [--n 300]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import grpc

from bench.latency import LIMITS, _pct
from llmgw.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from llmgw.kit.embedded import start_redis, start_tansu
from llmgw.kit.kafka import ensure_topics
from llmgw.stack import start_stack


async def run(n: int) -> dict[str, dict[str, float]]:
    redis, tansu = start_redis(), start_tansu()
    tmp = Path(tempfile.mkdtemp())
    (tmp / "limits.yaml").write_text(LIMITS)
    try:
        await ensure_topics(tansu.address)
        kw = {"redis_url": f"redis://{redis.address}/0", "kafka_bootstrap": tansu.address,
              "limits_file": tmp / "limits.yaml", "api_keys": "bench-key=bench"}
        healthy, degraded = await start_stack(**kw), await start_stack(**kw)  # type: ignore[arg-type]
        degraded.fake.state.faults["openai"].error_rate = 1.0
        md = (("authorization", "Bearer bench-key"),)
        stubs = {}
        channels = []
        for name, stack in (("healthy primary", healthy), ("primary down, breaker open", degraded)):
            ch = grpc.aio.insecure_channel(stack.ingress.address)
            channels.append(ch)
            stubs[name] = gateway_pb2_grpc.GatewayStub(ch)
        times: dict[str, list[float]] = {k: [] for k in stubs}
        for i in range(n + 20):
            for name, stub in stubs.items():
                req = gateway_pb2.CompleteRequest(
                    messages=[gateway_pb2.Message(role="user", content=f"q{i}")],
                    cache_mode=gateway_pb2.CompleteRequest.BYPASS)
                t0 = time.perf_counter()
                resp = await stub.Complete(req, metadata=md)
                if i >= 20:  # warm-up rounds also open the degraded stack's breaker
                    times[name].append((time.perf_counter() - t0) * 1000)
                    assert resp.provider == ("openai" if name == "healthy primary" else "anthropic")
        assert degraded.fake.state.calls["openai"] == 5, "breaker open: the primary saw only the threshold"
        for ch in channels:
            await ch.close()
        await healthy.stop()
        await degraded.stop()
    finally:
        redis.stop()
        tansu.stop()
    return {k: {"p50": statistics.median(v), "p99": _pct(v, 99)} for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=300)
    res = asyncio.run(run(parser.parse_args().n))
    base = res["healthy primary"]
    print(f"{'path':<28} {'p50 ms':>8} {'p99 ms':>8} {'p50 ratio':>10} {'p99 ratio':>10}")
    for name, r in res.items():
        print(f"{name:<28} {r['p50']:>8.2f} {r['p99']:>8.2f} {r['p50'] / base['p50']:>10.2f} "
              f"{r['p99'] / base['p99']:>10.2f}")


if __name__ == "__main__":
    main()
