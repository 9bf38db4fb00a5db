"""Every answered request's events reach the broker, whatever fails: the system as ``llmgw up``
runs it (every service its own process), with the broker frozen, killed and restarted, and the
ingress killed with SIGKILL."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from llmgw.demo import DEMO_KEY
from llmgw.gateway.v1 import gateway_pb2
from llmgw.kit.embedded import free_port, start_tansu
from llmgw.kit.kafka import REQUESTS_TOPIC, RESPONSES_TOPIC, ensure_topics
from llmgw.up import System, start_system
from tests.helpers import HIGH_LIMITS, Client, read_topic

pytestmark = [pytest.mark.e2e, pytest.mark.slow]



@pytest.fixture
async def system(tmp_path: Path) -> AsyncIterator[System]:
    s = await start_system(tmp_path, ingress_port=free_port(), with_drift=False, limits=HIGH_LIMITS)
    try:
        yield s
    finally:
        s.stop()


def _proc(system: System, name: str):  # type: ignore[no-untyped-def]
    return next(p for p in system.procs if p.name == name)


async def _answer(address: str, n: int, tag: str) -> list[str]:
    """``n`` answered requests; their request ids."""
    client = Client(address)
    try:
        replies = await asyncio.gather(*(client.complete(gateway_pb2.CompleteRequest(
            messages=[gateway_pb2.Message(role="user", content=f"{tag} {i}")],
            cache_mode=gateway_pb2.CompleteRequest.BYPASS), key=DEMO_KEY) for i in range(n)))
    finally:
        await client.close()
    return [r.request_id for r in replies]


async def _all_arrive(kafka: str, ids: list[str]) -> None:
    for topic in (REQUESTS_TOPIC, RESPONSES_TOPIC):
        got = await read_topic(kafka, topic, ids, timeout_s=60)
        missing = set(ids) - set(got)
        assert not missing, f"{len(missing)} of {len(ids)} answered requests have no event on {topic}"


async def test_sigkill_during_a_broker_hang_then_restart_loses_no_answered_event(system: System) -> None:
    tansu, ingress = _proc(system, "tansu"), _proc(system, "ingress")
    await _answer(system.ingress_addr, 5, "warm")
    os.kill(tansu.popen.pid, signal.SIGSTOP)  # the broker hangs: connections open, no answers
    try:
        answered = await _answer(system.ingress_addr, 100, "hang")
        await asyncio.sleep(1.0)  # well past the write-ahead bound (EVENTS_ACK_TIMEOUT_S, 0.15 s)
        os.kill(ingress.popen.pid, signal.SIGKILL)
        ingress.popen.wait(10)
        system.procs.remove(ingress)
    finally:
        os.kill(tansu.popen.pid, signal.SIGCONT)
    # The restarted ingress (same spool directory, as `llmgw up` or a k8s emptyDir gives it)
    # replays what the killed one had written ahead.
    await system.add_ingress("ingress-restarted", colocate=False)
    await _all_arrive(system.kafka, answered)


async def test_a_broker_restarted_empty_gets_nothing_before_its_topics_exist(system: System) -> None:
    tansu = _proc(system, "tansu")
    await _answer(system.ingress_addr, 5, "warm")
    tansu.stop()
    system.procs.remove(tansu)
    answered = await _answer(system.ingress_addr, 100, "down")  # spooled while the broker is away
    fresh = start_tansu(tansu.port, log=system.workdir / "logs" / "tansu-2.log")  # memory storage: empty
    system.procs.append(fresh)
    # The ingress reconnects now; before, it replayed at once into auto-created topics, which the
    # topic creation below reset (acknowledged events never readable).
    await asyncio.sleep(4.0)
    await ensure_topics(fresh.address)
    answered += await _answer(system.ingress_addr, 20, "after")
    await _all_arrive(fresh.address, answered)


async def test_no_api_key_reaches_any_log_line_after_bad_headers(tmp_path: Path) -> None:
    from tests.rawgrpc import raw_call

    debug = {"LOG_LEVEL": "debug", "GRPC_VERBOSITY": "debug"}  # every level, ours and grpc's
    system = await start_system(tmp_path / "debug", ingress_port=free_port(), with_drift=False, limits=HIGH_LIMITS,
                                extra_env={"ingress": debug, "router": debug, "limiter": debug, "cache": debug})
    try:
        await _leak_check(system, raw_call)
    finally:
        system.stop()


async def _leak_check(system: System, raw_call) -> None:  # type: ignore[no-untyped-def]
    secret = "sk-" + "hostileKey0123456789abcdef"
    body = gateway_pb2.CompleteRequest(messages=[gateway_pb2.Message(role="user", content="who am i")])
    for rid in (b"tab\there", b"nul\x00", "\u00e9".encode(), b"ok-id"):
        for auth_value in (f"Bearer {secret}".encode(), secret.encode(), f"Bearer {DEMO_KEY}".encode()):
            await raw_call(system.ingress_addr, "/llmgw.gateway.v1.Gateway/Complete", body.SerializeToString(),
                           [(b"authorization", auth_value), (b"x-request-id", rid)])
    await raw_call(system.ingress_addr, "/llmgw.gateway.v1.Gateway/Complete", b"\xff\xff garbage",
                   [(b"authorization", f"Bearer {secret}".encode())])
    await asyncio.sleep(0.5)
    for log in (system.workdir / "logs").glob("*.log"):
        text = log.read_text(errors="replace")
        assert secret not in text and "hostileKey0123456789" not in text, log.name
        assert DEMO_KEY not in text.replace("'demo-key'", ""), log.name
