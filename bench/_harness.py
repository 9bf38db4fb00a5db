"""What every benchmark shares: the embedded infrastructure, interleaved timing, the report.

Paths are timed round-robin (each round calls every path once) so machine noise hits them alike;
each round takes a fresh random order (seeded: runs are comparable), so every path follows every
other equally often on average. A path's after-reply work (events, a cache store) runs while the
next call is timed: in a fixed order, or one merely rotated each round (that keeps neighbours
neighbours), it would always land on the same path. The first ``WARMUP`` rounds warm connections
and code paths and are not counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from llmgw.kit.embedded import free_port, spawn, start_redis, start_tansu
from llmgw.kit.health import peer_serving
from llmgw.kit.kafka import ensure_topics
from llmgw.services.limiter.server import LimiterClient
from llmgw.up import System

__all__ = ["LIMITS", "CpuMeter", "Infra", "Load", "closed_loop", "infra", "interleave", "pct", "print_table",
           "start_echo", "summary"]

WARMUP = 20
# Limits no benchmark reaches: they measure the path, not the refusals.
LIMITS = """domains:
  gateway:
    - match: {tenant: "*"}
      limits:
        - {name: bench-rps, unit: requests, limit: 1000000, per: second}
"""


@dataclass(frozen=True)
class Infra:
    redis_url: str
    kafka: str
    limits_file: Path

    def stack_args(self) -> dict[str, Any]:
        return {"redis_url": self.redis_url, "kafka_bootstrap": self.kafka, "limits_file": self.limits_file,
                "api_keys": "bench-key=bench"}


@contextlib.asynccontextmanager
async def infra() -> AsyncIterator[Infra]:
    redis, tansu = start_redis(), start_tansu()
    tmp = Path(tempfile.mkdtemp())
    (tmp / "limits.yaml").write_text(LIMITS)
    try:
        await ensure_topics(tansu.address)
        yield Infra(f"redis://{redis.address}/0", tansu.address, tmp / "limits.yaml")
    finally:
        redis.stop()
        tansu.stop()


async def interleave(paths: Mapping[str, Callable[[int], Awaitable[Any]]], n: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in paths}
    order = list(paths)
    rng = random.Random(0)
    for i in range(n + WARMUP):
        rng.shuffle(order)
        for name in order:
            t0 = time.perf_counter()
            await paths[name](i)
            if i >= WARMUP:
                times[name].append((time.perf_counter() - t0) * 1000)
    return times


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def summary(times: Mapping[str, list[float]]) -> dict[str, dict[str, float]]:
    return {k: {"p50": statistics.median(v), "p99": pct(v, 99)} for k, v in times.items()}


def p50_ratio_interval(times: Mapping[str, list[float]], a: str, b: str, *, reps: int = 1000,
                       level: float = 0.95) -> tuple[float, float, float]:
    """p50(a) / p50(b) with a bootstrap interval. ``interleave`` measured both in every round, so
    rounds are resampled whole (a round's pair stays together: the machine's state that round
    touched both); on a shared machine one run's ratio moves by several percent, and a goal
    within that is only met when the whole interval is."""
    xs, ys = times[a], times[b]
    rng = random.Random(1)
    ratios = []
    for _ in range(reps):
        idx = [rng.randrange(len(xs)) for _ in xs]
        ratios.append(statistics.median(xs[i] for i in idx) / statistics.median(ys[i] for i in idx))
    ratios.sort()
    tail = (1 - level) / 2
    return (statistics.median(xs) / statistics.median(ys), ratios[int(tail * reps)],
            ratios[min(reps - 1, int((1 - tail) * reps))])


def print_table(title: str, res: Mapping[str, Mapping[str, float]], base: str) -> None:
    b = res[base]
    print(f"{title:<28} {'p50 ms':>8} {'p99 ms':>8} {'p50 ratio':>10} {'p99 ratio':>10}")
    for name, r in res.items():
        print(f"{name:<28} {r['p50']:>8.2f} {r['p99']:>8.2f} {r['p50'] / b['p50']:>10.2f} {r['p99'] / b['p99']:>10.2f}")


@dataclass
class Load:
    """One path under a closed loop: its rate, latencies and CPU per request by process group."""

    path: str
    concurrency: int
    rps: float
    p50: float
    p99: float
    cpu_ms: dict[str, float]  # group -> CPU ms per request; "client" is the load generator


class CpuMeter:
    """User + system CPU seconds of processes by group (e.g. stack, provider), and of this process
    (the load generator, "client"). ``idle`` is what they burn per second with no load (health
    checks, metrics, a broker's loops): it is subtracted, so a row's CPU per request is what its
    requests cost."""

    def __init__(self, processes: list[tuple[str, psutil.Process]]) -> None:
        self._procs = processes
        self._me = psutil.Process(os.getpid())
        self.idle: dict[str, float] = {}

    def snapshot(self) -> dict[str, float]:
        out = dict.fromkeys({group for group, _ in self._procs}, 0.0)
        for group, proc in self._procs:
            try:
                procs = [proc, *proc.children(recursive=True)]
                out[group] += sum(t.user + t.system for t in (p.cpu_times() for p in procs))
            except psutil.NoSuchProcess:
                continue
        me = self._me.cpu_times()
        out["client"] = me.user + me.system
        return out

    async def measure_idle(self, seconds: float = 2.0) -> None:
        before, t0 = self.snapshot(), time.monotonic()
        await asyncio.sleep(seconds)
        after, elapsed = self.snapshot(), time.monotonic() - t0
        self.idle = {k: (after[k] - before[k]) / elapsed for k in after if k != "client"}


async def closed_loop(call: Callable[[int], Awaitable[Any]], seconds: float, concurrency: int, meter: CpuMeter,
                      path: str, warmup_s: float = 0.5) -> Load:
    """``concurrency`` workers calling back to back; only calls started after the warm-up count."""
    latencies: list[float] = []
    counting = False
    stop_at = time.monotonic() + warmup_s + seconds
    seq = 0

    async def worker() -> None:
        nonlocal seq
        while time.monotonic() < stop_at:
            seq += 1
            t0 = time.perf_counter()
            await call(seq)
            if counting:
                latencies.append((time.perf_counter() - t0) * 1000)

    async def clock() -> tuple[dict[str, float], float]:
        nonlocal counting
        await asyncio.sleep(warmup_s)
        counting = True
        return meter.snapshot(), time.monotonic()

    tick = asyncio.ensure_future(clock())
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    before, started = await tick
    elapsed = time.monotonic() - started
    after = meter.snapshot()
    n = max(1, len(latencies))
    cpu = {k: max(0.0, after[k] - before[k] - meter.idle.get(k, 0.0) * elapsed) * 1000 / n for k in after}
    return Load(path, concurrency, len(latencies) / elapsed, statistics.median(latencies or [0.0]),
                pct(latencies or [0.0], 99), cpu)


async def start_echo(system: System) -> LimiterClient:
    """The bare gRPC echo server (bench/echo_server.py) as one more process of ``system``, and a
    client once it is SERVING: the floor any gRPC hop costs on this machine."""
    port = free_port(system.used_ports)
    system.procs.append(spawn("echo", [sys.executable, "-m", "bench.echo_server"], port, log=None,
                              env={"PORT": str(port), "LOG_LEVEL": "warning"}))
    echo = LimiterClient(f"127.0.0.1:{port}", timeout_s=10)
    while not await peer_serving(echo.channel):
        await asyncio.sleep(0.1)
    return echo
