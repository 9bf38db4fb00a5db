"""End to end: ``llmgw up`` as `make run` starts it — every service its own process."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from llmgw.kit.embedded import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


def _descendants(pid: int) -> list[int]:
    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _spawned_by(workdir: Path) -> list[psutil.Process]:
    """Processes still running whose command line names this run's workdir or ports."""
    out = []
    for p in psutil.process_iter(["cmdline", "environ"]):
        try:
            env = p.info.get("environ") or {}
            if str(workdir) in " ".join(p.info.get("cmdline") or []) or env.get("LLMGW_E2E_RUN") == str(workdir):
                out.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return out


def test_up_runs_the_demo_through_separate_processes(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "LLMGW_E2E_RUN": str(tmp_path)}
    env.pop("OPENAI_API_KEY", None)
    env.pop("ANTHROPIC_API_KEY", None)
    proc = subprocess.run(
        [sys.executable, "-m", "llmgw.cli", "up", "--demo", "--exit-after-demo", "--workdir", str(tmp_path),
         "--port", str(port), "--http-port", str(free_port())],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=400,
    )
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr[-3000:]
    for name in ("limiter", "cache", "router", "drift", "ingress"):
        assert f"{name:<8} SERVING" in out
    assert "cache_hit: True" in out
    assert "[openai:gpt-4o-mini] You said: Hello from the openai SDK" in out  # the HTTP face
    assert "[anthropic:claude-3-5-haiku-latest] You said: Hello from the anthropic SDK" in out
    assert "RESOURCE_EXHAUSTED" in out and "retry-after: " in out
    assert "provider: anthropic" in out and "openai/gpt-4o-mini=error" in out
    # Every demo request reached both topics, and the drift job consumed and published.
    # A tool call made by Anthropic after OpenAI failed, answered by the app, finished by the model.
    assert "provider: anthropic  finish_reason: tool_calls" in out
    assert 'tool call: get_weather({"city": "Lisbon"})' in out
    assert "The tool said: 22 C, clear sky" in out
    # A key made live: its budget refuses a worst case that does not fit, charges one that does,
    # and its revocation is seen by the running ingress.
    assert "max_tokens 4000: RESOURCE_EXHAUSTED: budget of key" in out and "max_tokens 200: OK" in out
    assert "after revoke: UNAUTHENTICATED" in out
    # Every demo request (the refused one too) reached both topics.
    assert "llm.requests:  12 of 12 requests" in out
    assert "llm.responses: 12 of 12 requests" in out
    assert "llm.drift.metrics: segment=" in out
    assert "no process left behind" in out
    assert _spawned_by(tmp_path) == []


def test_ctrl_c_stops_everything(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "LLMGW_E2E_RUN": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "llmgw.cli", "up", "--workdir", str(tmp_path), "--port", str(port),
         "--http-port", str(free_port())],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    assert proc.stdout is not None
    try:
        lines = []
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            if "gateway ready" in line or not line:
                break
        assert any("gateway ready" in ln for ln in lines), "".join(lines)
        children = _descendants(proc.pid) + [p.pid for p in _spawned_by(tmp_path)]
        assert len(set(children)) >= 6  # redis, tansu, fake providers, 5 services (some may share)
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, rest
        assert "no process left behind" in rest
        time.sleep(0.5)
        assert [p for p in _spawned_by(tmp_path) if p.pid != proc.pid and p.is_running()
                and p.status() != psutil.STATUS_ZOMBIE] == []
    finally:
        # Whatever happened above, leave nothing running (and no open pipe) for later tests.
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        proc.stdout.close()
        for p in _spawned_by(tmp_path):
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()


async def test_a_colocated_ingress_process_answers_hits_and_enforces_the_rules_file(tmp_path: Path) -> None:
    """``llmgw up --colocate``: the ingress process reads the limiter's rules and the cache's Redis
    through LIMITER_*/CACHE_* settings; the limited tenant is refused after 2 requests, a repeat is a hit."""
    import grpc

    from llmgw.demo import DEMO_KEY, LIMITED_KEY
    from llmgw.gateway.v1 import gateway_pb2, gateway_pb2_grpc
    from llmgw.up import start_system

    system = await start_system(tmp_path, ingress_port=free_port(), with_drift=False, colocate=True)
    try:
        assert "COLOCATE" in system.ingress_env
        async with grpc.aio.insecure_channel(system.ingress_addr) as channel:
            gw = gateway_pb2_grpc.GatewayStub(channel)
            req = gateway_pb2.CompleteRequest(prompt="summarize", variables={"text": "colocated"})
            first = await gw.Complete(req, metadata=(("authorization", f"Bearer {DEMO_KEY}"),))
            again = await gw.Complete(req, metadata=(("authorization", f"Bearer {DEMO_KEY}"),))
            assert not first.cache_hit and again.cache_hit and again.text == first.text
            limited = (("authorization", f"Bearer {LIMITED_KEY}"),)
            for i in range(2):
                await gw.Complete(gateway_pb2.CompleteRequest(prompt="summarize", variables={"text": f"l{i}"}),
                                  metadata=limited)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await gw.Complete(req, metadata=limited)
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "limited-rpm" in (refused.value.details() or "")
    finally:
        system.stop()


async def test_an_all_in_one_ingress_process_serves_misses_with_the_router_service_gone(tmp_path: Path) -> None:
    """``llmgw up --colocate limiter,cache,router``: a miss goes app -> ingress -> provider, with
    the routes, prompts and fake providers the router service would use; stopping that service
    changes nothing."""
    import grpc

    from llmgw.demo import DEMO_KEY
    from llmgw.gateway.v1 import gateway_pb2, gateway_pb2_grpc
    from llmgw.up import start_system

    system = await start_system(tmp_path, ingress_port=free_port(), with_drift=False,
                                colocate="limiter,cache,router")
    try:
        assert system.ingress_env["COLOCATE"] == "limiter,cache,router"
        next(p for p in system.procs if p.name == "router").stop()
        async with grpc.aio.insecure_channel(system.ingress_addr) as channel:
            gw = gateway_pb2_grpc.GatewayStub(channel)
            md = (("authorization", f"Bearer {DEMO_KEY}"),)
            req = gateway_pb2.CompleteRequest(prompt="summarize", variables={"text": "all in one"})
            first = await gw.Complete(req, metadata=md)
            again = await gw.Complete(req, metadata=md)
            assert not first.cache_hit and first.provider == "openai" and first.text
            assert again.cache_hit and again.text == first.text
            chunks = [c async for c in gw.StreamComplete(gateway_pb2.CompleteRequest(
                prompt="summarize", variables={"text": "streamed all in one"}), metadata=md)]
            assert chunks[-1].final and "".join(c.delta for c in chunks)
    finally:
        system.stop()
