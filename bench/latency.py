"""Gateway latency against a direct SDK call, side by side in one run.

Measures, interleaved round-robin so machine noise hits all three alike:
  direct   AsyncOpenAI -> fake provider (zero latency): the floor any gateway adds to
  miss     app -> ingress -> limiter + cache -> router -> fake provider (every request new)
  hit      app -> ingress -> limiter + cache (answered from cache)
All services run as real gRPC servers in this process (one event loop on a 2-core machine), so
the figures are an upper bound on the per-hop cost of separate processes.

    python -m bench.latency [--n 300]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import grpc
import openai

from llmgw.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from llmgw.kit.embedded import start_redis, start_tansu
from llmgw.kit.kafka import ensure_topics
from llmgw.stack import start_stack

LIMITS = """domains:
  gateway:
    - match: {tenant: "*"}
      limits:
        - {name: bench-rps, unit: requests, limit: 1000000, per: second}
"""


def _pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


coalesced: dict[str, int] = {}


async def run(n: int) -> dict[str, dict[str, float]]:
    redis, tansu = start_redis(), start_tansu()
    tmp = Path(tempfile.mkdtemp())
    (tmp / "limits.yaml").write_text(LIMITS)
    try:
        await ensure_topics(tansu.address)
        stack = await start_stack(redis_url=f"redis://{redis.address}/0", kafka_bootstrap=tansu.address,
                                  limits_file=tmp / "limits.yaml", api_keys="bench-key=bench",
                                  cache_overrides={"redis_timeout_s": 1.0})
        direct = openai.AsyncOpenAI(api_key="x", base_url=stack.fake.openai_url, max_retries=0)
        channel = grpc.aio.insecure_channel(stack.ingress.address)
        gw = gateway_pb2_grpc.GatewayStub(channel)
        md = (("authorization", "Bearer bench-key"),)
        hit_req = gateway_pb2.CompleteRequest(prompt="summarize", variables={"text": "the same question"})
        await gw.Complete(hit_req, metadata=md)  # warm up and fill the cache entry
        await asyncio.sleep(0.1)
        times: dict[str, list[float]] = {"direct": [], "miss": [], "hit": []}
        for i in range(n + 20):
            for name in ("direct", "miss", "hit"):
                t0 = time.perf_counter()
                if name == "direct":
                    await direct.chat.completions.create(
                        model="gpt-4o-mini", messages=[{"role": "user", "content": f"question {i}"}],
                        temperature=0, max_completion_tokens=512,
                    )
                elif name == "miss":
                    await gw.Complete(gateway_pb2.CompleteRequest(prompt="summarize",
                                                                  variables={"text": f"question {i}"}), metadata=md)
                else:
                    r = await gw.Complete(hit_req, metadata=md)
                    assert r.cache_hit
                if i >= 20:  # the first rounds warm connections and code paths
                    times[name].append((time.perf_counter() - t0) * 1000)
        # Single-flight: 100 concurrent identical misses against a provider taking 200 ms.
        stack.fake.state.faults["openai"].latency_ms = 200
        calls_before = stack.fake.state.calls["openai"]
        burst = gateway_pb2.CompleteRequest(prompt="summarize", variables={"text": "a burst of the same question"})
        replies = await asyncio.gather(*(gw.Complete(burst, metadata=md) for _ in range(100)))
        coalesced["provider_calls"] = stack.fake.state.calls["openai"] - calls_before
        coalesced["hits"] = sum(r.cache_hit for r in replies)
        await channel.close()
        await direct.close()
        await stack.stop()
    finally:
        redis.stop()
        tansu.stop()
    return {k: {"p50": statistics.median(v), "p99": _pct(v, 99)} for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=300)
    args = parser.parse_args()
    res = asyncio.run(run(args.n))
    base = res["direct"]
    print(f"{'path':<8} {'p50 ms':>8} {'p99 ms':>8} {'p50 x direct':>13} {'p99 x direct':>13}")
    for name, r in res.items():
        print(f"{name:<8} {r['p50']:>8.2f} {r['p99']:>8.2f} {r['p50'] / base['p50']:>13.2f} "
              f"{r['p99'] / base['p99']:>13.2f}")
    print(f"\ngateway overhead on a miss (p50): +{res['miss']['p50'] - base['p50']:.2f} ms; "
          f"a hit answers in {res['hit']['p50'] / res['miss']['p50']:.2f}x the miss time, "
          f"{res['hit']['p50'] / base['p50']:.2f}x a direct SDK call")
    print(f"100 concurrent identical misses: {coalesced['provider_calls']} provider call(s), "
          f"{coalesced['hits']} answered from the first one's result")


if __name__ == "__main__":
    main()
