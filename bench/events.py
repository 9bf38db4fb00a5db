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
import time

import grpc

from bench._harness import Infra, infra, interleave, print_table, summary
from llmgw.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from llmgw.kit.kafka import KafkaPublisher
from llmgw.stack import start_stack


async def latency(env: Infra, n: int) -> dict[str, dict[str, float]]:
    on = await start_stack(**env.stack_args())
    off = await start_stack(**env.stack_args(), ingress_overrides={"publish_events": False})
    channels = {"publishing on": grpc.aio.insecure_channel(on.ingress.address),
                "publishing off": grpc.aio.insecure_channel(off.ingress.address)}

    def call(stub: gateway_pb2_grpc.GatewayStub):  # type: ignore[no-untyped-def]
        return lambda i: stub.Complete(gateway_pb2.CompleteRequest(
            prompt="summarize", variables={"text": f"question {i}"}, cache_mode=gateway_pb2.CompleteRequest.BYPASS),
            metadata=(("authorization", "Bearer bench-key"),))

    times = await interleave({k: call(gateway_pb2_grpc.GatewayStub(ch)) for k, ch in channels.items()}, n)
    for ch in channels.values():
        await ch.close()
    await on.stop()
    await off.stop()
    return summary(times)


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
    async with infra() as env:
        res = await latency(env, n)
        rate = await throughput(env.kafka, events)
    print_table("gateway (cache bypass)", res, "publishing off")
    print(f"\npublisher throughput: {rate:,.0f} events/s acknowledged by the broker ({events} events)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--events", type=int, default=20_000)
    args = parser.parse_args()
    asyncio.run(run(args.n, args.events))


if __name__ == "__main__":
    main()
