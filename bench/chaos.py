"""The router under provider faults: a fault matrix against the healthy run, in one process.

Each scenario gets a fresh gateway stack (fresh breakers and pauses) on the shared embedded
infrastructure, the fault-injecting fake providers set as the scenario says, and the same load:
``--n`` requests at concurrency ``--concurrency``, every other one streamed, the cache bypassed
(every request reaches the router), each with a 10 s deadline. Printed per scenario: success
rate, provider calls per request, p50/p99 of the successful requests and their ratio to the
healthy run's.

    python -m bench.chaos [--n 200] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import grpc

from bench._harness import infra, pct
from llmgw.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from llmgw.stack import start_stack

MD = (("authorization", "Bearer bench-key"),)

# name -> {provider: faults}
SCENARIOS: dict[str, dict[str, dict[str, Any]]] = {
    "healthy": {},
    "openai outage (all 500)": {"openai": {"error_rate": 1.0, "status": 500}},
    "20 % 5xx on both": {"openai": {"status_rates": {"500": 0.2}}, "anthropic": {"status_rates": {"503": 0.2}}},
    "50 % 5xx on both": {"openai": {"status_rates": {"500": 0.5}}, "anthropic": {"status_rates": {"529": 0.5}}},
    "429 storm (openai 30 rpm)": {"openai": {"rpm": 30}},
    "429s with retry-after-ms": {"openai": {"status_rates": {"429": 0.3}, "retry_after_ms": 100}},
    "truncated streams 30 %": {"openai": {"fault": "truncate", "fault_rate": 0.3}},
    "dropped before 1st chunk 30 %": {"openai": {"fault": "disconnect_before_first", "fault_rate": 0.3}},
    "malformed chunks 30 %": {"openai": {"fault": "malformed_before_first", "fault_rate": 0.3}},
    "slow openai (300 ms)": {"openai": {"latency_ms": 300}},
}


async def _scenario(env: Any, faults: dict[str, dict[str, Any]], n: int, concurrency: int) -> dict[str, float]:
    stack = await start_stack(**env.stack_args())
    for provider, settings in faults.items():
        for k, v in settings.items():
            setattr(stack.fake.state.faults[provider], k, v)
    channel = grpc.aio.insecure_channel(stack.ingress.address)
    stub = gateway_pb2_grpc.GatewayStub(channel)
    sem = asyncio.Semaphore(concurrency)
    ok_ms: list[float] = []
    failed = 0

    async def one(i: int) -> None:
        nonlocal failed
        req = gateway_pb2.CompleteRequest(messages=[gateway_pb2.Message(role="user", content=f"chaos {i}")],
                                          cache_mode=gateway_pb2.CompleteRequest.BYPASS)
        async with sem:
            t0 = time.perf_counter()
            try:
                if i % 2:
                    chunks = [c async for c in stub.StreamComplete(req, metadata=MD, timeout=10)]
                    assert chunks[-1].final
                else:
                    await stub.Complete(req, metadata=MD, timeout=10)
                ok_ms.append((time.perf_counter() - t0) * 1000)
            except grpc.aio.AioRpcError:
                failed += 1

    try:
        await asyncio.gather(*(one(i) for i in range(n)))
    finally:
        calls = sum(stack.fake.state.calls.values())
        await channel.close()
        await stack.stop()
    return {"success": len(ok_ms) / n, "calls": calls / n,
            "p50": pct(ok_ms, 50) if ok_ms else float("nan"), "p99": pct(ok_ms, 99) if ok_ms else float("nan")}


async def run(n: int, concurrency: int) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    async with infra() as env:
        await _scenario(env, {}, 20, concurrency)  # warm-up: connections, code paths
        for name, faults in SCENARIOS.items():
            out[name] = await _scenario(env, faults, n, concurrency)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    res = asyncio.run(run(args.n, args.concurrency))
    base = res["healthy"]
    print(f"{'scenario':<32} {'success':>8} {'calls/req':>9} {'p50 ms':>8} {'p99 ms':>8} {'p50 x':>7} {'p99 x':>7}")
    for name, r in res.items():
        print(f"{name:<32} {r['success']:>8.1%} {r['calls']:>9.2f} {r['p50']:>8.2f} {r['p99']:>8.2f} "
              f"{r['p50'] / base['p50']:>7.2f} {r['p99'] / base['p99']:>7.2f}")


if __name__ == "__main__":
    main()
