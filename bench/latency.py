"""Gateway latency against a direct SDK call, side by side in one run, and single-flight.

Paths, interleaved round-robin:
  direct   AsyncOpenAI -> fake provider (zero latency): the floor any gateway adds to
  miss     app -> ingress -> limiter + cache -> router -> fake provider (every request new)
  hit      app -> ingress -> limiter + cache (answered from cache)
Then 100 concurrent identical misses against a 200 ms provider: how many provider calls.
All services run as real gRPC servers in this process (one event loop on a 2-core machine), so
the figures are an upper bound on the per-hop cost of separate processes.

    python -m bench.latency [--n 300]
"""

from __future__ import annotations

import argparse
import asyncio

import grpc
import openai

from bench._harness import infra, interleave, print_table, summary
from llmgw.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from llmgw.stack import start_stack

MD = (("authorization", "Bearer bench-key"),)


async def run(n: int) -> tuple[dict[str, dict[str, float]], tuple[int, int]]:
    async with infra() as env:
        stack = await start_stack(**env.stack_args(), cache_overrides={"redis_timeout_s": 1.0})
        direct = openai.AsyncOpenAI(api_key="x", base_url=stack.fake.openai_url, max_retries=0)
        channel = grpc.aio.insecure_channel(stack.ingress.address)
        gw = gateway_pb2_grpc.GatewayStub(channel)
        hit_req = gateway_pb2.CompleteRequest(prompt="summarize", variables={"text": "the same question"})
        await gw.Complete(hit_req, metadata=MD)  # fill the cache entry
        await asyncio.sleep(0.1)

        async def hit(i: int) -> None:
            assert (await gw.Complete(hit_req, metadata=MD)).cache_hit

        times = await interleave({
            "direct": lambda i: direct.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": f"question {i}"}],
                temperature=0, max_completion_tokens=512),
            "miss": lambda i: gw.Complete(
                gateway_pb2.CompleteRequest(prompt="summarize", variables={"text": f"question {i}"}), metadata=MD),
            "hit": hit,
        }, n)
        stack.fake.state.faults["openai"].latency_ms = 200
        before = stack.fake.state.calls["openai"]
        burst = gateway_pb2.CompleteRequest(prompt="summarize", variables={"text": "a burst of the same question"})
        replies = await asyncio.gather(*(gw.Complete(burst, metadata=MD) for _ in range(100)))
        coalesced = (stack.fake.state.calls["openai"] - before, sum(r.cache_hit for r in replies))
        await channel.close()
        await direct.close()
        await stack.stop()
    return summary(times), coalesced


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=300)
    res, (calls, hits) = asyncio.run(run(parser.parse_args().n))
    print_table("path (ratios x direct)", res, "direct")
    base = res["direct"]["p50"]
    print(f"\ngateway overhead on a miss (p50): +{res['miss']['p50'] - base:.2f} ms; a hit answers in "
          f"{res['hit']['p50'] / res['miss']['p50']:.2f}x the miss time, {res['hit']['p50'] / base:.2f}x a direct call")
    print(f"100 concurrent identical misses: {calls} provider call(s), {hits} answered from the first one's result")


if __name__ == "__main__":
    main()
