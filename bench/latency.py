"""Gateway latency against a direct SDK call, side by side in one run, and single-flight.

Everything runs as deployed: Redis, Tansu, the fake providers and every service in its own
process (``llmgw up``'s start_system, drift off); this process is only the application. Paths,
interleaved round-robin in a fresh random order every round (bench/_harness.py):
  direct          AsyncOpenAI -> fake provider (zero latency): what calling the provider costs
  miss            app -> ingress -> limiter + cache -> router -> fake provider (every request new)
  hit             app -> ingress -> limiter and cache services (split topology: two gRPC hops)
  hit colocated   app -> ingress running the limiter and cache cores (COLOCATE=limiter,cache)
  grpc echo       app -> a bare gRPC server built like the services (bench/echo_server.py): the
                  floor any gRPC hop costs here, for reading the hit rows
  miss / hit traced  the same on a second system with traces on in every service (sampled 100 %,
                  exported through the span queue over OTLP/HTTP to a stand-in collector in its
                  own process, bench/otlp_sink.py; ``--export file``: to JSON-lines files): what
                  tracing costs
Then 100 concurrent identical misses against a 200 ms provider: how many provider calls.

    python -m bench.latency [--n 300] [--export otlp|file]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import grpc
import openai

from bench import otlp_sink
from bench._harness import LIMITS, interleave, p50_ratio_interval, print_table, start_echo, summary
from llmgw.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from llmgw.kit.embedded import free_port
from llmgw.kit.main import run as run_loop
from llmgw.up import start_system

MD = (("authorization", "Bearer bench-key"),)
Stub = gateway_pb2_grpc.GatewayStub


def _hit(gw: Stub, req: gateway_pb2.CompleteRequest) -> Callable[[int], Awaitable[None]]:
    async def call(i: int) -> None:
        assert (await gw.Complete(req, metadata=MD)).cache_hit
    return call


async def _burst(gw: Stub, fake_url: str) -> tuple[int, int]:
    """100 identical requests at once while the provider takes 200 ms: provider calls, hits."""
    async with aiohttp.ClientSession(fake_url) as http:
        await http.post("/_control/openai", json={"latency_ms": 200})
        before = (await (await http.get("/_stats")).json())["calls"]["openai"]
        burst = gateway_pb2.CompleteRequest(prompt="summarize", variables={"text": "a burst of the same question"})
        replies = await asyncio.gather(*(gw.Complete(burst, metadata=MD) for _ in range(100)))
        after = (await (await http.get("/_stats")).json())["calls"]["openai"]
    return after - before, sum(r.cache_hit for r in replies)


async def run(n: int, trace_ratio: float = 1.0, twin_traced: bool = True, traced_env: dict[str, str] | None = None,
              export: str = "otlp") -> tuple[dict[str, list[float]], tuple[int, int], dict[str, int]]:
    # Every setting at its default but one: the burst of 100 starves every process on a 2-core
    # machine, and the ingress's 250 ms deadline on its gRPC hop to the cache service is wall
    # clock, so starved hops would become misses by design. (The cache's own 50 ms Redis budget
    # counts from when a lookup is sent and needs no such room.)
    system = await start_system(Path(tempfile.mkdtemp(prefix="llmgw-bench-")), ingress_port=free_port(),
                                with_drift=False, limits=LIMITS, api_keys="bench-key=bench",
                                extra_env={"ingress": {"CACHE_TIMEOUT_S": "2"}})
    # Parent-based: the ingress decides for the whole trace, the peers follow its traceparent.
    sampled = {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": str(trace_ratio),
               **(traced_env or {})}
    sink = None
    if twin_traced and export == "otlp":
        sink_port = free_port(system.used_ports)
        sink = otlp_sink.start(sink_port)
        sampled["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{sink_port}"
    try:
        traced = await start_system(Path(tempfile.mkdtemp(prefix="llmgw-bench-traced-")), ingress_port=free_port(
            system.used_ports), with_drift=False, limits=LIMITS, api_keys="bench-key=bench",
                                    extra_env={"ingress": {"CACHE_TIMEOUT_S": "2", **sampled},
                                               **{name: sampled for name in ("limiter", "cache", "router")}},
                                    otel="file" if twin_traced and export == "file" else None)
    except BaseException:
        system.stop()
        if sink is not None:
            sink.kill()
        raise
    try:
        assert system.fake_url is not None, "the bench needs the fake providers (unset the real API keys)"
        colocated = await system.add_ingress("ingress-colocated", colocate=True)
        echo = await start_echo(system)
        direct = openai.AsyncOpenAI(api_key="x", base_url=f"{system.fake_url}/v1", max_retries=0)
        channels = [grpc.aio.insecure_channel(a) for a in (system.ingress_addr, colocated, traced.ingress_addr)]
        gw, gw_colocated, gw_traced = (Stub(c) for c in channels)
        hit_req = gateway_pb2.CompleteRequest(prompt="summarize", variables={"text": "the same question"})
        for g in (gw, gw_colocated, gw_traced):
            await g.Complete(hit_req, metadata=MD)  # fill the entry (the second finds the first's)
        await asyncio.sleep(0.2)
        times = await interleave({
            "direct": lambda i: direct.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": f"question {i}"}],
                temperature=0, max_completion_tokens=512),
            "miss": lambda i: gw.Complete(
                gateway_pb2.CompleteRequest(prompt="summarize", variables={"text": f"question {i}"}), metadata=MD),
            "hit": _hit(gw, hit_req),
            "hit colocated": _hit(gw_colocated, hit_req),
            "grpc echo": lambda i: echo.check([("tenant", "bench")]),
            "miss traced": lambda i: gw_traced.Complete(
                gateway_pb2.CompleteRequest(prompt="summarize", variables={"text": f"question {i}"}), metadata=MD),
            "hit traced": _hit(gw_traced, hit_req),
        }, n)
        coalesced = await _burst(gw, system.fake_url)
        collected: dict[str, int] = {}
        if sink is not None:
            await asyncio.sleep(0.5)  # the last batches (the queue exports every 200 ms)
            async with aiohttp.ClientSession(sampled["OTEL_EXPORTER_OTLP_ENDPOINT"]) as http:
                collected = await (await http.get("/stats")).json()
        for c in channels:
            await c.close()
        await direct.close()
        await echo.close()
    finally:
        system.stop()
        traced.stop()
        if sink is not None:
            sink.kill()
    return times, coalesced, collected


def _setting(text: str) -> tuple[str, str]:
    name, eq, value = text.partition("=")
    if not name or not eq:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=VALUE")
    return name, value


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--trace-ratio", type=float, default=1.0, help="the traced system's sampling (default 1.0)")
    parser.add_argument("--untraced-twin", action="store_true",
                        help="A/A check: the second system runs with traces off (its rows should match)")
    parser.add_argument("--traced-env", action="append", default=[], type=_setting, metavar="NAME=VALUE",
                        help="a setting for every service of the traced system (e.g. OTEL_BSP_MAX_QUEUE_SIZE=0: "
                             "spans recorded, none exported)")
    parser.add_argument("--export", choices=("otlp", "file"), default="otlp",
                        help="where the traced system's spans go: OTLP/HTTP to a stand-in collector (default) "
                             "or JSON-lines files")
    args = parser.parse_args()
    traced_env = dict(args.traced_env)
    out: list[tuple[dict[str, list[float]], tuple[int, int], dict[str, int]]] = []

    async def go() -> None:
        out.append(await run(args.n, args.trace_ratio, not args.untraced_twin, traced_env, args.export))

    run_loop(go())  # uvloop, as the services run
    times, (calls, hits), collected = out[0]
    res = summary(times)
    print_table("path (ratios x direct)", res, "direct")
    base = res["direct"]["p50"]
    print(f"\ngateway overhead on a miss (p50): +{res['miss']['p50'] - base:.2f} ms; a hit answers in "
          f"{res['hit']['p50'] / base:.2f}x a direct call (split), {res['hit colocated']['p50'] / base:.2f}x "
          f"(colocated; target <= 0.5x)")
    # The ratio also measures this machine's gRPC-vs-HTTP costs; this is what the gateway adds.
    print(f"a colocated hit costs {res['hit colocated']['p50'] - res['grpc echo']['p50']:.2f} ms above a bare gRPC "
          f"hop ({res['grpc echo']['p50'] / base:.2f}x direct on this machine)")
    print(f"100 concurrent identical misses: {calls} provider call(s), {hits} answered from the first one's result")
    twin = "off (A/A check)" if args.untraced_twin else f"on ({args.trace_ratio:.0%} sampled, {args.export} export)"
    miss, hit = (p50_ratio_interval(times, f"{p} traced", p) for p in ("miss", "hit"))
    print(f"traces {twin} vs off, p50 (95 % bootstrap interval over rounds): "
          f"miss {miss[0]:.3f}x [{miss[1]:.3f}, {miss[2]:.3f}], hit {hit[0]:.3f}x [{hit[1]:.3f}, {hit[2]:.3f}] "
          f"(goal: under 1.05x)")
    if collected:
        print(f"the stand-in collector took {collected['requests']} OTLP requests, {collected['bytes']:,} bytes")


if __name__ == "__main__":
    main()
