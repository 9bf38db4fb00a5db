"""Throughput, latency under load and CPU per request, as deployed, beside the baselines in one run.

Every service runs in its own process (``llmgw up``'s start_system, drift off) and this process is
only the load generator: closed-loop workers (concurrency 32 by default, and a sweep), each path
for ``--seconds`` after a short warm-up, one path after another. Paths:

  grpc echo        a bare gRPC server built like the services (bench/echo_server.py): the floor
                   any gRPC hop costs here; the baseline of the hit rows
  direct           the ``openai`` SDK on its default transport -> the fake provider (zero
                   latency): the baseline of the miss rows
  miss / hit       through the ingress over gRPC, in three topologies:
                     split        the ingress calls the limiter, cache and router services
                     colocated    the ingress runs the limiter and cache cores (COLOCATE=limiter,cache)
                     all-in-one   ... and the router core (COLOCATE=limiter,cache,router)
  http miss / hit  the same over the OpenAI-compatible HTTP API, with the ``openai`` SDK

For each: requests/s, p50/p99 and **CPU milliseconds per request** summed over every process of
the stack (ingresses, limiter, cache, router, Redis, the broker), with the fake provider's and the
load generator's own CPU beside it, each rate as a ratio to its baseline. Then the time each
service took to report SERVING (all starting at once), and an ingress started alone.

    python -m bench.throughput [--seconds 3] [--concurrency 32] [--sweep 1,8,64]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import openai
import psutil

from bench._harness import LIMITS, CpuMeter, Load, closed_loop, start_echo
from llmgw.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from llmgw.kit.embedded import free_port
from llmgw.kit.main import run as run_loop
from llmgw.up import start_system

MD = (("authorization", "Bearer bench-key"),)
Call = Callable[[int], Awaitable[object]]
# Where each process's CPU is counted: the provider stand-in and the echo server are not llmgw.
_OUTSIDE = {"fake-providers": "provider", "echo": "echo"}


def _grpc(stub: gateway_pb2_grpc.GatewayStub, *, hit: bool) -> Call:
    async def call(i: int) -> object:
        text = "the same question" if hit else f"question {i} {time.monotonic_ns()}"
        reply = await stub.Complete(gateway_pb2.CompleteRequest(prompt="summarize", variables={"text": text}),
                                    metadata=MD)
        assert reply.cache_hit == hit, "a hit path missed (or a miss hit): the row would be wrong"
        return reply
    return call


def _http(client: openai.AsyncOpenAI, *, hit: bool) -> Call:
    async def call(i: int) -> object:
        text = "the same http question" if hit else f"http question {i} {time.monotonic_ns()}"
        return await client.chat.completions.create(
            model="default", messages=[{"role": "user", "content": text}], temperature=0, max_completion_tokens=512)
    return call


async def run(seconds: float, concurrency: int, sweep: list[int]) -> tuple[list[Load], dict[str, float]]:
    system = await start_system(Path(tempfile.mkdtemp(prefix="llmgw-bench-")), ingress_port=free_port(),
                                with_drift=False, limits=LIMITS, api_keys="bench-key=bench",
                                extra_env={"ingress": {"CACHE_TIMEOUT_S": "2"}})
    closers: list[Callable[[], Awaitable[object]]] = []
    try:
        assert system.fake_url is not None, "the bench needs the fake providers (unset the real API keys)"
        colocated = await system.add_ingress("ingress-colocated", colocate=True)
        all_http = free_port(system.used_ports)
        all_in_one = await system.add_ingress("ingress-all-in-one", colocate="limiter,cache,router",
                                              http_port=all_http)
        echo = await start_echo(system)
        closers.append(echo.close)
        # The direct baseline on the SDK's default transport, as an application would call it.
        direct = openai.AsyncOpenAI(api_key="x", base_url=f"{system.fake_url}/v1", max_retries=0)
        http_split = openai.AsyncOpenAI(api_key="bench-key", base_url=f"http://{system.http_addr}/v1",
                                        max_retries=0)
        http_all = openai.AsyncOpenAI(api_key="bench-key", base_url=f"http://127.0.0.1:{all_http}/v1",
                                      max_retries=0)
        closers += [direct.close, http_split.close, http_all.close]
        stubs = {}
        for name, addr in (("split", system.ingress_addr), ("colocated", colocated), ("all-in-one", all_in_one)):
            channel = grpc.aio.insecure_channel(addr)
            closers.append(channel.close)
            stubs[name] = gateway_pb2_grpc.GatewayStub(channel)
        paths: dict[str, Call] = {
            "grpc echo": lambda i: echo.check([("tenant", "bench")]),
            "direct": lambda i: direct.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": f"question {i}"}], temperature=0,
                max_completion_tokens=512),
            **{f"miss {t}": _grpc(stub, hit=False) for t, stub in stubs.items()},
            **{f"hit {t}": _grpc(stub, hit=True) for t, stub in stubs.items()},
            "http miss split": _http(http_split, hit=False),
            "http hit split": _http(http_split, hit=True),
            "http miss all-in-one": _http(http_all, hit=False),
            "http hit all-in-one": _http(http_all, hit=True),
        }
        await stubs["split"].Complete(gateway_pb2.CompleteRequest(
            prompt="summarize", variables={"text": "the same question"}), metadata=MD)
        await http_split.chat.completions.create(model="default", messages=[
            {"role": "user", "content": "the same http question"}], temperature=0, max_completion_tokens=512)
        await asyncio.sleep(0.3)  # the entries are stored after the reply
        meter = CpuMeter([(_OUTSIDE.get(p.name, "stack"), psutil.Process(p.popen.pid)) for p in system.procs])
        await meter.measure_idle()
        loads = [await closed_loop(call, seconds, concurrency, meter, name) for name, call in paths.items()]
        for c in sweep:
            for name in ("grpc echo", "direct", "miss split", "miss all-in-one", "hit colocated"):
                loads.append(await closed_loop(paths[name], seconds, c, meter, name))
        # An ingress started alone (as after a restart): split, and carrying the router core.
        await system.add_ingress("ingress-restart-split", colocate=False)
        await system.add_ingress("ingress-restart-all-in-one", colocate="limiter,cache,router")
        serving = dict(system.serving_s)
    finally:
        for close in closers:
            await close()
        system.stop()
    return loads, serving


def _print(loads: list[Load], serving: dict[str, float], concurrency: int) -> None:
    base: dict[tuple[str, int], Load] = {(x.path, x.concurrency): x for x in loads if x.path in ("grpc echo", "direct")}
    print(f"{'path':<22} {'c':>3} {'rps':>7} {'x base':>7} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'CPU ms/req: stack':>18} {'provider':>9} {'client':>7}")
    print("(CPU: user + system over the row's window, less the processes' idle rate, per request)")
    for x in sorted(loads, key=lambda x: (x.concurrency != concurrency, x.concurrency, loads.index(x))):
        ref = base.get(("direct" if "miss" in x.path or x.path == "direct" else "grpc echo", x.concurrency))
        ratio = f"{x.rps / ref.rps:.2f}" if ref else "-"
        stack = x.cpu_ms["echo"] if x.path == "grpc echo" else x.cpu_ms["stack"]
        print(f"{x.path:<22} {x.concurrency:>3} {x.rps:>7.0f} {ratio:>7} {x.p50:>7.2f} {x.p99:>7.2f} "
              f"{stack:>18.2f} {x.cpu_ms['provider']:>9.2f} {x.cpu_ms['client']:>7.2f}")
    print("(x base: misses and direct x direct, hits and echo x grpc echo, at the same concurrency; "
          "echo's CPU is the echo server's)")
    get = {(x.path, x.concurrency): x for x in loads}
    if ("direct", 1) in get and ("grpc echo", 1) in get:
        echo1 = get[("grpc echo", 1)].p50
        for path in ("miss split", "miss all-in-one"):
            over = get[(path, 1)].p50 - get[("direct", 1)].p50
            print(f"{path} overhead p50 at c=1: +{over:.2f} ms = {over / echo1:.2f}x a bare gRPC echo round trip "
                  f"({echo1:.2f} ms; goal <= 3x)")
    def rate(path: str) -> float:
        return get[(path, concurrency)].rps

    for path in ("miss split", "miss colocated", "miss all-in-one", "http miss all-in-one"):
        print(f"{path} throughput at c={concurrency}: {rate(path) / rate('direct'):.2f}x direct (goal >= 0.6x)")
    for path in ("hit colocated", "hit all-in-one"):
        print(f"{path} throughput at c={concurrency}: {rate(path) / rate('grpc echo'):.2f}x grpc echo (goal >= 0.5x)")
    print("\ntime to SERVING, s (every service starting at once; then one ingress started alone):")
    print("  " + ", ".join(f"{name} {s:.1f}" for name, s in serving.items()))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--sweep", default="1,8,64", help="more concurrencies for the main paths ('' for none)")
    args = parser.parse_args()
    sweep = [int(c) for c in args.sweep.split(",") if c.strip()]
    out: list[tuple[list[Load], dict[str, float]]] = []

    async def go() -> None:
        out.append(await run(args.seconds, args.concurrency, sweep))

    run_loop(go())  # uvloop, as the services run
    _print(*out[0], args.concurrency)


if __name__ == "__main__":
    main()
