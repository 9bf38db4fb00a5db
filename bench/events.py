"""What publishing events costs the request path, and how many events/s the publisher sustains.

1. Gateway latency with publishing on (KafkaPublisher to Tansu) vs off (events discarded), two
   stacks in this process, calls interleaved round-robin. Target: under 5 % difference.
2. Publisher throughput: N events enqueued as fast as possible, timed until the broker has
   acknowledged all of them.

    python -m bench.events [--n 300] [--events 20000]
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
from llmgw.kit.kafka import KafkaPublisher, ensure_topics
from llmgw.stack import start_stack


async def latency(redis_url: str, kafka: str, limits: Path, n: int) -> dict[str, dict[str, float]]:
    kw = {"redis_url": redis_url, "kafka_bootstrap": kafka, "limits_file": limits, "api_keys": "bench-key=bench"}
    on = await start_stack(**kw)  # type: ignore[arg-type]
    off = await start_stack(**kw, ingress_overrides={"publish_events": False})  # type: ignore[arg-type]
    md = (("authorization", "Bearer bench-key"),)
    channels = {"publishing on": grpc.aio.insecure_channel(on.ingress.address),
                "publishing off": grpc.aio.insecure_channel(off.ingress.address)}
    stubs = {k: gateway_pb2_grpc.GatewayStub(ch) for k, ch in channels.items()}
    times: dict[str, list[float]] = {k: [] for k in stubs}
    for i in range(n + 20):
        for name, stub in stubs.items():
            req = gateway_pb2.CompleteRequest(prompt="summarize", variables={"text": f"question {i}"},
                                              cache_mode=gateway_pb2.CompleteRequest.BYPASS)
            t0 = time.perf_counter()
            await stub.Complete(req, metadata=md)
            if i >= 20:
                times[name].append((time.perf_counter() - t0) * 1000)
    for ch in channels.values():
        await ch.close()
    await on.stop()
    await off.stop()
    return {k: {"p50": statistics.median(v), "p99": _pct(v, 99)} for k, v in times.items()}


async def throughput(kafka: str, events: int) -> float:
    publisher = KafkaPublisher(kafka, queue_size=events + 1)
    await publisher.start()
    await publisher.connected.wait()
    value = b"x" * 400  # about the size of a request event
    t0 = time.perf_counter()
    for i in range(events):
        publisher.publish("llm.requests", f"bench-{i}", value)
    assert await publisher.flush(timeout_s=300)
    elapsed = time.perf_counter() - t0
    await publisher.stop()
    return events / elapsed


async def run(n: int, events: int) -> None:
    redis, tansu = start_redis(), start_tansu()
    tmp = Path(tempfile.mkdtemp())
    (tmp / "limits.yaml").write_text(LIMITS)
    try:
        await ensure_topics(tansu.address)
        res = await latency(f"redis://{redis.address}/0", tansu.address, tmp / "limits.yaml", n)
        rate = await throughput(tansu.address, events)
    finally:
        redis.stop()
        tansu.stop()
    base = res["publishing off"]
    print(f"{'gateway (cache bypass)':<24} {'p50 ms':>8} {'p99 ms':>8} {'p50 ratio':>10} {'p99 ratio':>10}")
    for name, r in res.items():
        print(f"{name:<24} {r['p50']:>8.2f} {r['p99']:>8.2f} {r['p50'] / base['p50']:>10.3f} "
              f"{r['p99'] / base['p99']:>10.3f}")
    print(f"\npublisher throughput: {rate:,.0f} events/s acknowledged by the broker ({events} events)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--events", type=int, default=20_000)
    args = parser.parse_args()
    asyncio.run(run(args.n, args.events))


if __name__ == "__main__":
    main()
