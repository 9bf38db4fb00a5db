"""llmgw beside the gateways people compare it with, in one run, on the same fake provider.

Peers (each skipped with a message when it can't be installed or started):
  LiteLLM proxy   PyPI ``litellm[proxy]``, installed by this script into its own venv under
                  ``--peers-dir``; one worker, its Redis cache on (so it has a hit path too)
  Portkey gateway npm ``@portkey-ai/gateway``, installed there with npm and run with node
                  (``build/start-server.js --headless``): a pass-through, no cache or limits
llmgw runs as deployed (``llmgw up``'s start_system, every service its own process, drift off),
answering over its OpenAI-compatible HTTP API, split and all-in-one (COLOCATE=limiter,cache,router).
Every path is the ``openai`` SDK (default transport) in this process calling chat completions:

  1. serial: all paths interleaved round-robin (bench/_harness.py), p50/p99 and the overhead over
     the direct call's p50;
  2. throughput: each path at concurrency 32 in turn, requests/s and the gateway's own CPU
     milliseconds per request (its process tree; llmgw: every process of the stack).

    python -m bench.peers [--n 200] [--seconds 4] [--peers-dir .llmgw/peers] [--no-install]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import openai
import psutil

from bench._harness import LIMITS, CpuMeter, Load, closed_loop, interleave, summary
from llmgw.kit.embedded import LocalProcess, free_port, spawn, start_redis
from llmgw.kit.main import run as run_loop
from llmgw.up import start_system

Call = Callable[[int], Awaitable[object]]
CONCURRENCY = 32


def _say(msg: str) -> None:
    print(f"peers | {msg}", file=sys.stderr, flush=True)


def _install_litellm(root: Path, install: bool) -> Path | None:
    exe = root / "litellm-venv" / "bin" / "litellm"
    if exe.exists():
        return exe
    if not install:
        _say(f"LiteLLM skipped: not installed at {exe} (run without --no-install)")
        return None
    _say("installing litellm[proxy] into its own venv (a few minutes, once)")
    try:
        subprocess.run([sys.executable, "-m", "venv", str(root / "litellm-venv")], check=True)
        subprocess.run([str(root / "litellm-venv" / "bin" / "pip"), "install", "-q", "litellm[proxy]"], check=True)
    except (subprocess.CalledProcessError, OSError) as exc:
        _say(f"LiteLLM skipped: install failed ({exc})")
        return None
    return exe if exe.exists() else None


def _install_portkey(root: Path, install: bool) -> Path | None:
    script = root / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"
    if script.exists():
        return script
    if not shutil.which("node") or not shutil.which("npm"):
        _say("Portkey skipped: node and npm are needed")
        return None
    if not install:
        _say(f"Portkey skipped: not installed at {script} (run without --no-install)")
        return None
    _say("installing @portkey-ai/gateway with npm (once)")
    try:
        subprocess.run(["npm", "install", "--silent", "--prefix", str(root), "@portkey-ai/gateway"], check=True)
    except (subprocess.CalledProcessError, OSError) as exc:
        _say(f"Portkey skipped: install failed ({exc})")
        return None
    return script if script.exists() else None


async def _wait_http(url: str, proc: LocalProcess, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if not proc.alive():
                return False
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with http.get(url) as resp:
                    if resp.status < 500:
                        return True
            await asyncio.sleep(0.5)
    return False


@dataclass
class Peers:
    """The running peers: name -> (base URL for the openai SDK, API key, headers, its process)."""

    endpoints: dict[str, tuple[str, str, dict[str, str], LocalProcess]] = field(default_factory=dict)
    procs: list[LocalProcess] = field(default_factory=list)

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.stop()


@contextlib.asynccontextmanager
async def peers(root: Path, fake_url: str, install: bool, workdir: Path) -> AsyncIterator[Peers]:
    out = Peers()
    try:
        litellm = _install_litellm(root, install)
        if litellm is not None:
            redis = start_redis(free_port(), log=workdir / "litellm-redis.log")
            out.procs.append(redis)
            host, port = redis.address.split(":")
            config = workdir / "litellm.yaml"
            # It refuses to start without a master key (every request would be unauthenticated).
            master = f"sk-bench-{secrets.token_hex(16)}"
            config.write_text(
                f"general_settings: {{master_key: {master}}}\n"
                "model_list:\n"
                "  - model_name: gpt-4o-mini\n"
                f"    litellm_params: {{model: openai/gpt-4o-mini, api_base: '{fake_url}/v1', api_key: fake}}\n"
                "litellm_settings:\n"
                "  telemetry: false\n"
                "  cache: true\n"
                f"  cache_params: {{type: redis, host: '{host}', port: {port}}}\n")
            lport = free_port()
            proc = spawn("litellm", [str(litellm), "--config", str(config), "--port", str(lport), "--num_workers",
                                     "1"], lport, log=workdir / "litellm.log",
                         env={**os.environ, "LITELLM_LOG": "ERROR", "LITELLM_TELEMETRY": "False"})
            out.procs.append(proc)
            if await _wait_http(f"http://127.0.0.1:{lport}/health/liveliness", proc, 120):
                out.endpoints["litellm"] = (f"http://127.0.0.1:{lport}/v1", master, {}, proc)
            else:
                _say(f"LiteLLM skipped: not serving after 120 s (see {workdir / 'litellm.log'})")
        portkey = _install_portkey(root, install)
        if portkey is not None:
            pport = free_port()
            proc = spawn("portkey", ["node", str(portkey), f"--port={pport}", "--headless"], pport,
                         log=workdir / "portkey.log")
            out.procs.append(proc)
            if await _wait_http(f"http://127.0.0.1:{pport}/", proc, 60):
                headers = {"x-portkey-provider": "openai", "x-portkey-custom-host": f"{fake_url}/v1"}
                out.endpoints["portkey"] = (f"http://127.0.0.1:{pport}/v1", "fake", headers, proc)
            else:
                _say(f"Portkey skipped: not serving after 60 s (see {workdir / 'portkey.log'})")
        yield out
    finally:
        out.stop()


def _ask(client: openai.AsyncOpenAI, model: str, *, hit: bool, tag: str) -> Call:
    async def call(i: int) -> object:
        text = f"the same question for {tag}" if hit else f"question {i} {time.monotonic_ns()} for {tag}"
        return await client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": text}], temperature=0, max_completion_tokens=512)
    return call


async def run(n: int, seconds: float, root: Path, install: bool) -> tuple[dict[str, dict[str, float]], list[Load]]:
    workdir = Path(tempfile.mkdtemp(prefix="llmgw-peers-"))
    system = await start_system(workdir / "llmgw", ingress_port=free_port(), with_drift=False, limits=LIMITS,
                                api_keys="bench-key=bench", extra_env={"ingress": {"CACHE_TIMEOUT_S": "2"}})
    clients: list[openai.AsyncOpenAI] = []
    try:
        assert system.fake_url is not None, "the bench needs the fake providers (unset the real API keys)"
        all_http = free_port(system.used_ports)
        await system.add_ingress("ingress-all-in-one", colocate="limiter,cache,router", http_port=all_http)

        def client(base: str, key: str = "fake", headers: dict[str, str] | None = None) -> openai.AsyncOpenAI:
            c = openai.AsyncOpenAI(api_key=key, base_url=base, max_retries=0, default_headers=headers)
            clients.append(c)
            return c

        direct = client(f"{system.fake_url}/v1")
        split = client(f"http://{system.http_addr}/v1", "bench-key")
        all_in_one = client(f"http://127.0.0.1:{all_http}/v1", "bench-key")
        paths: dict[str, Call] = {
            "direct": _ask(direct, "gpt-4o-mini", hit=False, tag="direct"),
            "llmgw miss (all-in-one)": _ask(all_in_one, "default", hit=False, tag="llmgw"),
            "llmgw miss (split)": _ask(split, "default", hit=False, tag="llmgw"),
            "llmgw hit (all-in-one)": _ask(all_in_one, "default", hit=True, tag="llmgw"),
        }
        groups = [("llmgw" if p.name != "fake-providers" else "provider", psutil.Process(p.popen.pid))
                  for p in system.procs]
        async with peers(root, system.fake_url, install, workdir) as running:
            for name, (base, key, headers, proc) in running.endpoints.items():
                c = client(base, key, headers=headers)
                paths[f"{name} miss"] = _ask(c, "gpt-4o-mini", hit=False, tag=name)
                if name == "litellm":
                    paths[f"{name} hit"] = _ask(c, "gpt-4o-mini", hit=True, tag=name)
                groups.append((name, psutil.Process(proc.popen.pid)))
            for name, call in paths.items():
                if "hit" in name:
                    await call(0)  # fill the entry
            await asyncio.sleep(0.5)
            _say(f"serial: {len(paths)} paths interleaved, {n} rounds")
            serial = summary(await interleave(paths, n))
            meter = CpuMeter(groups)
            await meter.measure_idle()
            _say(f"throughput: each path at concurrency {CONCURRENCY} for {seconds:g} s")
            loads = [await closed_loop(call, seconds, CONCURRENCY, meter, name) for name, call in paths.items()]
    finally:
        for c in clients:
            await c.close()
        system.stop()
    return serial, loads


def _gateway(path: str) -> str:
    return path.split(" ")[0]


def _print(serial: dict[str, dict[str, float]], loads: list[Load]) -> None:
    base = serial["direct"]["p50"]
    rates = {x.path: x for x in loads}
    print(f"{'path':<26} {'p50 ms':>7} {'p99 ms':>7} {'overhead p50':>13} {'rps c=32':>9} {'x direct':>9} "
          f"{'gateway CPU ms/req':>19}")
    for path, r in serial.items():
        load = rates[path]
        gw = _gateway(path)
        cpu = f"{load.cpu_ms.get(gw, 0.0):.2f}" if gw != "direct" else "-"
        over = f"+{r['p50'] - base:.2f} ms" if path != "direct" else "-"
        print(f"{path:<26} {r['p50']:>7.2f} {r['p99']:>7.2f} {over:>13} {load.rps:>9.0f} "
              f"{load.rps / rates['direct'].rps:>9.2f} {cpu:>19}")
    print("(overhead: the path's p50 - the direct call's p50, interleaved; CPU: the gateway's processes, "
          "less their idle rate; the load generator and the fake provider are not counted)")
    for peer in ("litellm", "portkey"):
        for kind in ("miss", "hit"):
            theirs = rates.get(f"{peer} {kind}")
            if theirs is None:
                continue
            ours = rates["llmgw miss (all-in-one)" if kind == "miss" else "llmgw hit (all-in-one)"]
            over = serial[ours.path]["p50"] - base
            their_over = serial[theirs.path]["p50"] - base
            print(f"llmgw {kind} (all-in-one) vs {peer}: throughput {ours.rps / theirs.rps:.2f}x, "
                  f"overhead p50 {over:+.2f} ms vs {their_over:+.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--peers-dir", default=".llmgw/peers", help="where the peers are installed")
    parser.add_argument("--no-install", action="store_true", help="skip a peer that is not installed yet")
    args = parser.parse_args()
    root = Path(args.peers_dir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    out: list[tuple[dict[str, dict[str, float]], list[Load]]] = []

    async def go() -> None:
        out.append(await run(args.n, args.seconds, root, not args.no_install))

    run_loop(go())
    _print(*out[0])


if __name__ == "__main__":
    main()
