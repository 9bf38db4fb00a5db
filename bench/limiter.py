"""Limiter throughput and latency against a bare gRPC echo server built the same way, and the
Lua call alone against Redis — side by side, interleaved in rounds, in one run. The limiter and
the echo server each run as their own process (as deployed); the callers run in this one.

    python -m bench.limiter [--rounds 5] [--per-round 1000] [--concurrency 32] [--cluster]

Target (limiter issue): limiter throughput at least 0.6x the echo server's.

``--cluster`` adds the Lua call against a local 3-primary Redis Cluster (docs/deploy.md "Redis
Cluster and Sentinel"), beside the same call on one server, with decisions spread over 16 tenants:
limits on one subject (one shard per decision) and on a tenant and a route (two shards, decided
in parallel, a refusal given back). On this 2-core machine the three primaries share the cores
with everything else: read it for the cost of routing and of a second shard, not for capacity.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import redis.asyncio as aioredis
import yaml

from bench._harness import pct
from llmgw.kit.embedded import free_port, spawn, start_redis
from llmgw.kit.health import peer_serving
from llmgw.services.limiter.core import RedisLimiter
from llmgw.services.limiter.rules import parse_rules
from llmgw.services.limiter.server import LimiterClient

RULES = {"domains": {"gateway": [{"match": {"tenant": "*"}, "limits": [
    {"name": "burst", "unit": "requests", "limit": 10_000_000, "per": "second"},
    {"name": "sustained", "unit": "requests", "limit": 100_000_000, "per": "minute"},
    {"name": "tokens", "unit": "tokens", "limit": 1_000_000_000, "per": "minute"},
]}]}}


async def measure(call: Callable[[int], Awaitable[object]], n: int, concurrency: int) -> tuple[float, list[float]]:
    lat: list[float] = []
    counter = iter(range(n))

    async def worker() -> None:
        for i in counter:
            t0 = time.perf_counter()
            await call(i)
            lat.append((time.perf_counter() - t0) * 1000)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return n / (time.perf_counter() - t0), lat


TWO_SUBJECTS = {"domains": {"gateway": [*RULES["domains"]["gateway"], {"match": {"route": "*"}, "limits": [
    {"name": "route-rpm", "unit": "requests", "limit": 100_000_000, "per": "minute"}]}]}}


async def run(rounds: int, per_round: int, concurrency: int, cluster: bool = False) -> None:
    proc = start_redis()
    redis = aioredis.Redis.from_url(f"redis://{proc.address}/0")
    prefix = f"bench-{uuid.uuid4().hex[:6]}"
    core = RedisLimiter(redis, parse_rules(RULES), prefix=prefix, timeout_s=1.0)
    tmp = Path(tempfile.mkdtemp())
    (tmp / "limits.yaml").write_text(yaml.safe_dump(RULES))
    lport, eport = free_port(), free_port()
    servers = [
        spawn("limiter", [sys.executable, "-m", "llmgw.services.limiter"], lport, log=None,
              env={"PORT": str(lport), "REDIS_URL": f"redis://{proc.address}/0",
                   "LIMITS_FILE": str(tmp / "limits.yaml"),
                   "KEY_PREFIX": prefix + "-svc", "REDIS_TIMEOUT_S": "1", "LOG_LEVEL": "warning"}),
        spawn("echo", [sys.executable, "-m", "bench.echo_server"], eport, log=None,
              env={"PORT": str(eport), "LOG_LEVEL": "warning"}),
    ]
    lim_client = LimiterClient(f"127.0.0.1:{lport}", timeout_s=10)
    echo_client = LimiterClient(f"127.0.0.1:{eport}", timeout_s=10)
    for c in (lim_client, echo_client):
        while not await peer_serving(c.channel):
            await asyncio.sleep(0.1)
    desc = [("tenant", "acme")]
    paths: dict[str, Callable[[int], Awaitable[object]]] = {
        "echo (gRPC only)": lambda i: echo_client.check(desc, tokens=100),
        "limiter (gRPC + Redis)": lambda i: lim_client.check(desc, tokens=100, request_id=f"r{i}"),
        "Lua call alone": lambda i: core.check(desc, tokens=100, request_id=f"l{i}"),
    }
    local_cluster = None
    if cluster:
        from llmgw.kit.embedded import start_redis_cluster
        from llmgw.kit.redis import connect

        local_cluster = start_redis_cluster(3)
        clustered = connect(local_cluster.url)
        one_shard = RedisLimiter(clustered, parse_rules(RULES), prefix=prefix + "-c1", timeout_s=1.0)
        two_shards = RedisLimiter(clustered, parse_rules(TWO_SUBJECTS), prefix=prefix + "-c2", timeout_s=1.0)
        paths |= {
            "Lua, 1 server, 16 tenants": lambda i: core.check([("tenant", f"t{i % 16}")], tokens=100),
            "Lua, cluster, 1 shard": lambda i: one_shard.check([("tenant", f"t{i % 16}")], tokens=100),
            "Lua, cluster, 2 shards": lambda i: two_shards.check([("tenant", f"t{i % 16}"), ("route", f"r{i % 7}")],
                                                                  tokens=100),
        }
    rates: dict[str, list[float]] = {k: [] for k in paths}
    lats: dict[str, list[float]] = {k: [] for k in paths}
    try:
        for call in paths.values():  # warm-up
            await measure(call, 200, concurrency)
        for _ in range(rounds):
            for name, call in paths.items():
                rate, lat = await measure(call, per_round, concurrency)
                rates[name].append(rate)
                lats[name].extend(lat)
    finally:
        await lim_client.close()
        await echo_client.close()
        for server in servers:
            server.stop()
        await redis.aclose()
        proc.stop()
        if local_cluster is not None:
            await clustered.aclose()
            local_cluster.stop()
    base = statistics.median(rates["echo (gRPC only)"])
    print(f"concurrency {concurrency}, {rounds} rounds x {per_round} decisions, 3 limits per decision")
    print(f"{'path':<26} {'decisions/s':>12} {'x echo':>8} {'p50 ms':>8} {'p99 ms':>8}")
    for name in paths:
        r = statistics.median(rates[name])
        print(f"{name:<26} {r:>12,.0f} {r / base:>8.2f} {statistics.median(lats[name]):>8.2f} "
              f"{pct(lats[name], 99):>8.2f}")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--per-round", type=int, default=1000)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--cluster", action="store_true", help="add the Lua call on a local 3-primary Redis Cluster")
    a = p.parse_args()
    asyncio.run(run(a.rounds, a.per_round, a.concurrency, a.cluster))


if __name__ == "__main__":
    main()
