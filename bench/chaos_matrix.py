"""The fault matrix: the system as deployed (``llmgw up``: every service its own process), steady
load from a separate process, one fault at a time. ``make chaos`` runs it.

For each scenario: a few seconds of steady load, the fault, then recovery; printed per scenario:
requests failed, p50/p99 of the answered ones against the healthy baseline of the same run,
events lost and duplicated (counted by request id on the broker, both topics, for every answered
request) and the time from the fault's end to the first of 5 successes in a row.

    python -m bench.chaos_matrix [--rate 40] [--seconds 12] [--only NAME ...] [--colocate limiter,cache,router]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiokafka import AIOKafkaConsumer

from bench._harness import LIMITS, pct
from llmgw.demo import DEMO_KEY
from llmgw.events import request_id_of
from llmgw.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from llmgw.kit.embedded import LocalProcess, free_port, start_redis, start_tansu
from llmgw.kit.kafka import REQUESTS_TOPIC, RESPONSES_TOPIC, ensure_topics
from llmgw.up import System, start_system

FAULT_AT_S, FAULT_FOR_S = 3.0, 5.0


# ---- the load, in its own process ----

async def _load(address: str, rate: float, seconds: float, out: Path) -> None:
    import grpc

    channel = grpc.aio.insecure_channel(address)
    stub = gateway_pb2_grpc.GatewayStub(channel)
    md = (("authorization", f"Bearer {DEMO_KEY}"),)
    start = time.monotonic()
    rows: list[dict[str, Any]] = []

    async def one(i: int) -> None:
        req = gateway_pb2.CompleteRequest(messages=[gateway_pb2.Message(role="user", content=f"load {i}")],
                                          cache_mode=gateway_pb2.CompleteRequest.BYPASS)
        sent = time.monotonic()
        row: dict[str, Any] = {"t": sent - start}
        try:
            reply = await stub.Complete(req, metadata=md, timeout=5)
            row.update(ok=True, id=reply.request_id)
        except grpc.aio.AioRpcError as exc:
            row.update(ok=False, code=exc.code().name)
        row["ms"] = (time.monotonic() - sent) * 1000
        rows.append(row)

    tasks = []
    i = 0
    while time.monotonic() - start < seconds:
        tasks.append(asyncio.create_task(one(i)))
        i += 1
        await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
    await asyncio.gather(*tasks)
    await channel.close()
    out.write_text("\n".join(json.dumps(r) for r in rows))


# ---- faults ----

def _proc(system: System, name: str) -> LocalProcess:
    return next(p for p in system.procs if p.name == name)


def _signal(proc: LocalProcess, sig: int) -> None:
    os.killpg(proc.popen.pid, sig)


async def _freeze(system: System, name: str) -> None:
    p = _proc(system, name)
    _signal(p, signal.SIGSTOP)
    await asyncio.sleep(FAULT_FOR_S)
    _signal(p, signal.SIGCONT)


async def _kill_redis(system: System) -> None:
    p = _proc(system, "redis")
    p.stop()
    system.procs.remove(p)
    await asyncio.sleep(FAULT_FOR_S)
    system.procs.insert(0, start_redis(p.port, log=system.workdir / "logs" / "redis-restarted.log"))


async def _restart_broker(system: System) -> None:
    p = _proc(system, "tansu")
    _signal(p, signal.SIGKILL)  # at once: a SIGTERM'd broker still acknowledges while it shuts down
    p.popen.wait(10)
    system.procs.remove(p)
    await asyncio.sleep(FAULT_FOR_S / 2)
    fresh = start_tansu(p.port, log=system.workdir / "logs" / "tansu-restarted.log")
    system.procs.insert(1, fresh)
    await asyncio.sleep(FAULT_FOR_S / 2)
    await ensure_topics(fresh.address)  # memory storage: ops recreate the topics


async def _ingress_down(system: System, sig: int) -> None:
    p = _proc(system, "ingress")
    _signal(p, sig)
    await asyncio.get_running_loop().run_in_executor(None, p.popen.wait, 30)
    system.procs.remove(p)
    # Restarted as it ran: the cores it ran itself, if any (the rest of the matrix runs on it).
    await system.add_ingress("ingress", colocate=system.ingress_env.get("COLOCATE", ""), port=p.port)


async def _poison(system: System) -> None:
    import grpc

    async with grpc.aio.insecure_channel(system.ingress_addr) as ch:
        stub = gateway_pb2_grpc.GatewayStub(ch)
        huge = gateway_pb2.CompleteRequest(messages=[gateway_pb2.Message(role="user", content="poison")],
                                           metadata={"note": "x" * (2 << 20)})
        for key in (None, DEMO_KEY):
            with contextlib.suppress(grpc.aio.AioRpcError):
                await stub.Complete(huge, metadata=((("authorization", f"Bearer {key}"),) if key else ()), timeout=5)
    await asyncio.sleep(FAULT_FOR_S)


async def _bad_header(system: System) -> None:
    from tests.rawgrpc import raw_call

    req = gateway_pb2.CompleteRequest(messages=[gateway_pb2.Message(role="user", content="bad id")])
    body = req.SerializeToString()
    for bad in (b"tab\there", b"nul\x00", "é".encode()):
        await raw_call(system.ingress_addr, "/llmgw.gateway.v1.Gateway/Complete", body,
                       [(b"authorization", f"Bearer {DEMO_KEY}".encode()), (b"x-request-id", bad)])
    await asyncio.sleep(FAULT_FOR_S)


async def _provider_errors(system: System) -> None:
    async with aiohttp.ClientSession() as http:
        await http.post(f"{system.fake_url}/_control/openai", json={"status_rates": {"500": 0.5}})
        await asyncio.sleep(FAULT_FOR_S)
        await http.post(f"{system.fake_url}/_control/openai", json={"status_rates": {}})


SCENARIOS: dict[str, Callable[[System], Awaitable[None]]] = {
    "healthy": lambda s: asyncio.sleep(FAULT_FOR_S),
    "redis killed 5 s": _kill_redis,
    "redis frozen 5 s": lambda s: _freeze(s, "redis"),
    "broker killed, restarted empty": _restart_broker,
    "broker frozen 5 s": lambda s: _freeze(s, "tansu"),
    "ingress SIGKILL, restarted": lambda s: _ingress_down(s, signal.SIGKILL),
    "ingress SIGTERM, restarted": lambda s: _ingress_down(s, signal.SIGTERM),
    "poison request (2 MiB field)": _poison,
    "bad x-request-id headers": _bad_header,
    "openai 50 % 5xx": _provider_errors,
}


# ---- measuring ----

async def _count_events(bootstrap: str, ids: set[str], timeout_s: float = 30.0) -> dict[str, Counter[str]]:
    out: dict[str, Counter[str]] = {}
    for topic in (REQUESTS_TOPIC, RESPONSES_TOPIC):
        seen: Counter[str] = Counter()
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                    enable_auto_commit=False, group_id=f"chaos-{uuid.uuid4().hex[:8]}")
        await consumer.start()
        try:
            deadline = time.monotonic() + timeout_s
            quiet_since = time.monotonic()
            while time.monotonic() < deadline:
                batch = await consumer.getmany(timeout_ms=300)
                records = [r for rs in batch.values() for r in rs]
                for r in records:
                    # llm.requests is keyed by the drift segment: the request id is in the event.
                    if (k := request_id_of(topic, r.key, r.value)) in ids:
                        seen[k] += 1
                if records:
                    quiet_since = time.monotonic()
                elif ids <= set(seen) and time.monotonic() - quiet_since > 1.5:
                    break
        finally:
            await consumer.stop()
        out[topic] = seen
    return out


async def _scenario(system: System, name: str, fault: Callable[[System], Awaitable[None]], rate: float,
                    seconds: float, tmp: Path) -> dict[str, Any]:
    out = tmp / f"{uuid.uuid4().hex[:6]}.jsonl"
    load = subprocess.Popen([sys.executable, "-m", "bench.chaos_matrix", "--load", system.ingress_addr,
                             "--rate", str(rate), "--seconds", str(seconds), "--out", str(out)])
    await asyncio.sleep(FAULT_AT_S)
    await fault(system)
    fault_end = FAULT_AT_S + FAULT_FOR_S
    await asyncio.get_running_loop().run_in_executor(None, load.wait)
    rows = [json.loads(line) for line in out.read_text().splitlines() if line]
    ok = [r for r in rows if r["ok"]]
    # What the broker itself lost is not ours to count: a broker restarted with memory storage
    # lost what it had acknowledged; count the requests answered from the kill on.
    counted = {r["id"] for r in ok if name != "broker killed, restarted empty" or r["t"] >= FAULT_AT_S}
    events = await _count_events(system.kafka, counted)
    lost = {i for i in counted if any(events[t][i] == 0 for t in events)}
    dup = {i for i in counted if any(events[t][i] > 1 for t in events)}
    after = sorted((r for r in rows if r["t"] >= fault_end), key=lambda r: r["t"])
    recover = None
    run = 0
    for r in after:
        run = run + 1 if r["ok"] else 0
        if run == 5:
            recover = r["t"] - fault_end
            break
    ms = [r["ms"] for r in ok]
    return {"requests": len(rows), "failed": len(rows) - len(ok), "p50": pct(ms, 50) if ms else float("nan"),
            "p99": pct(ms, 99) if ms else float("nan"), "lost": len(lost), "dup": len(dup), "recover": recover}


async def run(rate: float, seconds: float, only: list[str], colocate: str = "") -> dict[str, dict[str, Any]]:
    tmp = Path(tempfile.mkdtemp(prefix="llmgw-chaos-"))
    system = await start_system(tmp, with_drift=False, limits=LIMITS, ingress_port=free_port(),
                                colocate=colocate or False)
    results: dict[str, dict[str, Any]] = {}
    try:
        await _scenario(system, "warm-up", lambda s: asyncio.sleep(0), rate, FAULT_AT_S + 1, tmp)
        for name, fault in SCENARIOS.items():
            if only and name != "healthy" and not any(o in name for o in only):
                continue
            results[name] = await _scenario(system, name, fault, rate, seconds, tmp)
            print(f"  done: {name}", flush=True)
    finally:
        system.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=40.0, help="requests per second")
    parser.add_argument("--seconds", type=float, default=12.0, help="load per scenario")
    parser.add_argument("--only", nargs="*", default=[], help="scenario name fragments (healthy always runs)")
    parser.add_argument("--colocate", default="", help="cores the ingress runs itself, e.g. limiter,cache,router")
    parser.add_argument("--load", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load:
        asyncio.run(_load(args.load, args.rate, args.seconds, Path(args.out)))
        return
    res = asyncio.run(run(args.rate, args.seconds, args.only, args.colocate))
    base = res["healthy"]
    print(f"\n{'scenario':<32} {'requests':>8} {'failed':>7} {'p50 ms':>8} {'p99 ms':>8} {'+p50':>7} {'+p99':>8} "
          f"{'lost':>5} {'dup':>5} {'recover s':>9}")
    for name, r in res.items():
        rec = "-" if r["recover"] is None else f"{r['recover']:.1f}"
        print(f"{name:<32} {r['requests']:>8} {r['failed']:>7} {r['p50']:>8.1f} {r['p99']:>8.1f} "
              f"{r['p50'] - base['p50']:>+7.1f} {r['p99'] - base['p99']:>+8.1f} {r['lost']:>5} {r['dup']:>5} {rec:>9}")


if __name__ == "__main__":
    main()
