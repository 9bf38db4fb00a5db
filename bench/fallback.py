"""What a fallback costs once the breaker is open: primary down vs a healthy primary, one run.

Two gateway stacks in this process, each with its own fake providers at zero latency: in one the
primary (OpenAI) answers; in the other it returns 500 on every call, so after the breaker opens
every request is skipped straight to Anthropic. Calls are interleaved round-robin.

    python -m bench.fallback [--n 300]
"""

from __future__ import annotations

import argparse
import asyncio

import grpc

from bench._harness import infra, interleave, print_table, summary
from llmgw.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from llmgw.stack import start_stack

MD = (("authorization", "Bearer bench-key"),)


async def run(n: int) -> dict[str, dict[str, float]]:
    async with infra() as env:
        healthy, degraded = await start_stack(**env.stack_args()), await start_stack(**env.stack_args())
        degraded.fake.state.faults["openai"].error_rate = 1.0
        channels = [grpc.aio.insecure_channel(s.ingress.address) for s in (healthy, degraded)]
        stubs = [gateway_pb2_grpc.GatewayStub(ch) for ch in channels]

        def call(stub: gateway_pb2_grpc.GatewayStub, provider: str):  # type: ignore[no-untyped-def]
            async def one(i: int) -> None:
                req = gateway_pb2.CompleteRequest(messages=[gateway_pb2.Message(role="user", content=f"q{i}")],
                                                  cache_mode=gateway_pb2.CompleteRequest.BYPASS)
                assert (await stub.Complete(req, metadata=MD)).provider == provider
            return one

        times = await interleave({"healthy primary": call(stubs[0], "openai"),
                                  "primary down, breaker open": call(stubs[1], "anthropic")}, n)
        # Breaker open: the primary saw the calls that opened it (min_calls, routes.yaml) and the
        # half-open probes of each cool-down the run lasted; never one call per request.
        assert degraded.fake.state.calls["openai"] < 2 * 20 + n // 10, degraded.fake.state.calls
        for ch in channels:
            await ch.close()
        await healthy.stop()
        await degraded.stop()
    return summary(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=300)
    print_table("path", asyncio.run(run(parser.parse_args().n)), "healthy primary")


if __name__ == "__main__":
    main()
