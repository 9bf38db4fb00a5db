"""``llmgw up``: the whole system on its embedded default, every service its own process.

Starts Redis (the machine's redis-server) and Tansu (Kafka) on free ports, creates the topics,
starts the fake providers unless real keys are set, then limiter, cache, router, drift and
ingress; waits until each reports SERVING on grpc.health.v1; optionally runs the demo. Ctrl-C
(or SIGTERM) stops everything it started, in reverse order, and leaves no process behind.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from llmgw.demo import DEMO_KEY, LIMITED_KEY, run_demo
from llmgw.kit.embedded import LocalProcess, free_port, spawn, start_redis, start_tansu, wait_tcp
from llmgw.kit.health import peer_serving
from llmgw.kit.kafka import ensure_topics

__all__ = ["System", "main", "service_settings", "start_system"]

REPO = Path(__file__).resolve().parents[2]

# Demo limits: everyone 60/min; the "limited" tenant 2/min so the demo can show a rejection.
DEMO_LIMITS = """\
domains:
  provider:
    - match: {provider: "*", model: "*"}
      limits:
        - {name: provider-rpm, unit: requests, limit: 500, per: minute}
  gateway:
    - match: {tenant: "*"}
      limits:
        - {name: tenant-rpm, unit: requests, limit: 60, per: minute}
        - {name: tenant-tpm, unit: tokens, limit: 200000, per: minute}
    - match: {tenant: limited}
      limits:
        - {name: limited-rpm, unit: requests, limit: 2, per: minute}
"""


def _say(msg: str) -> None:
    print(f"llmgw up | {msg}", flush=True)


@dataclass
class System:
    workdir: Path
    ingress_addr: str = ""
    http_addr: str = ""  # the ingress's OpenAI-compatible HTTP face
    kafka: str = ""
    fake_url: str | None = None
    procs: list[LocalProcess] = field(default_factory=list)
    # What another ingress needs to join this system (see add_ingress).
    ingress_env: dict[str, str] = field(default_factory=dict)
    used_ports: set[int] = field(default_factory=set)
    # Seconds from spawn to SERVING, per process started by start_system / add_ingress.
    serving_s: dict[str, float] = field(default_factory=dict)

    async def add_ingress(self, name: str, *, colocate: bool | str | Iterable[str], port: int | None = None,
                          http_port: int = -1) -> str:
        """One more ingress process on this system's limiter, cache, router and Redis (e.g. to
        compare topologies side by side, or to restart one on its port); returns its address
        once SERVING. ``colocate``: True for the limiter and cache cores, or which cores."""
        port = port or free_port(self.used_ports)
        cores = _cores(colocate)
        env = {**self.ingress_env, "PORT": str(port), "METRICS_PORT": "0", "HTTP_PORT": str(http_port),
               **_colocated_env(self.ingress_env, self.workdir / "limits.yaml", cores)}
        if not cores:
            env.pop("COLOCATE", None)
        started = time.monotonic()
        self.procs.append(spawn(name, [sys.executable, "-m", "llmgw.services.ingress"], port,
                                log=self.workdir / "logs" / f"{name}.log", env=env))
        await _wait_serving(self, name, f"127.0.0.1:{port}", 30)
        self.serving_s[name] = time.monotonic() - started
        return f"127.0.0.1:{port}"

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.stop()
        self.procs.clear()

    def check_alive(self) -> None:
        for p in self.procs:
            if not p.alive():
                raise RuntimeError(f"{p.name} exited (code {p.popen.returncode}); see {self.workdir}/logs/{p.name}.log")


async def _wait_serving(system: System, name: str, address: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    async with grpc.aio.insecure_channel(address) as ch:
        while time.monotonic() < deadline:
            system.check_alive()
            if await peer_serving(ch):
                return
            await asyncio.sleep(0.2)
    raise TimeoutError(f"{name} at {address} not SERVING after {timeout_s}s")


# What ``--colocate`` runs inside the ingress: a hit is then one gRPC hop (the router stays a
# service: a miss's provider call is the slow part, and a separate router scales on its own).
COLOCATED = ("limiter", "cache")


def _cores(colocate: bool | str | Iterable[str]) -> tuple[str, ...]:
    if isinstance(colocate, bool):
        return COLOCATED if colocate else ()
    if isinstance(colocate, str):
        return tuple(c.strip() for c in colocate.split(",") if c.strip())
    return tuple(colocate)


def _colocated_env(env: dict[str, str], limits_file: Path, cores: Iterable[str] = COLOCATED) -> dict[str, str]:
    """The ingress runs these cores itself, on the services' Redis, rules, routes and prompts."""
    cores = tuple(cores)
    if not cores:
        return {}
    redis_url = env["REDIS_URL"]
    out = {"COLOCATE": ",".join(cores)}
    if "limiter" in cores:
        out |= {"LIMITER_REDIS_URL": redis_url, "LIMITER_LIMITS_FILE": str(limits_file),
                "LIMITER_KEYS_REDIS_URL": redis_url}
    if "cache" in cores:
        out |= {"CACHE_REDIS_URL": redis_url}
    if "router" in cores:
        out |= {"ROUTER_PROMPTS_DIR": env.get("PROMPTS_DIR", str(REPO / "prompts"))}
        for var in ("OPENAI_BASE_URL", "ANTHROPIC_BASE_URL"):
            if var in env:
                out[f"ROUTER_{var}"] = env[var]
    return out


def service_settings(common: dict[str, str], ports: dict[str, int], *, redis_url: str, limits_file: Path,
                     api_keys: str, workdir: Path, http_addr: str, cores: tuple[str, ...], with_drift: bool,
                     extra_env: dict[str, dict[str, str]] | None) -> dict[str, dict[str, str]]:
    """Each service's own settings (on top of ``common``); ``extra_env`` last, so it can change
    any service that runs — the drift job's demo-sized windows included."""
    services: dict[str, dict[str, str]] = {
        # Keys' own rate limits (docs/keys.md) come from the key store.
        "limiter": {"LIMITS_FILE": str(limits_file), "KEYS_REDIS_URL": redis_url},
        "cache": {},
        "router": {"PROMPTS_DIR": str(REPO / "prompts"), "LIMITER_ADDR": f"127.0.0.1:{ports['limiter']}"},
        "ingress": {
            "LIMITER_ADDR": f"127.0.0.1:{ports['limiter']}",
            "CACHE_ADDR": f"127.0.0.1:{ports['cache']}",
            "ROUTER_ADDR": f"127.0.0.1:{ports['router']}",
            "API_KEYS": api_keys,
            "LABELS_REDIS_URL": redis_url,
            # The key store and spend ledger: `llmgw keys create --redis-url ...` adds keys live.
            "KEYS_REDIS_URL": redis_url,
            "PROMPTS_DIR": str(REPO / "prompts"),
            # Stable across restarts of this system: a restarted ingress replays what it spooled.
            "SPOOL_DIR": str(workdir / "spool" / "ingress"),
            "HTTP_PORT": http_addr.rsplit(":", 1)[1],
        },
    }
    if cores:
        services["ingress"].update(_colocated_env({**common, **services["ingress"]}, limits_file, cores))
    if with_drift:
        # Demo-sized windows: a real deployment uses hundreds of inputs per reference (docs/drift.md).
        services["drift"] = {"WINDOW_SIZE": "4", "REFERENCE_SIZE": "2", "BATCH_SECONDS": "2"}
    for name, more in (extra_env or {}).items():
        if name not in services:
            raise ValueError(f"extra_env for {name!r}: no such service in this system (with_drift={with_drift})")
        services[name].update(more)
    return services


async def start_system(workdir: Path, *, ingress_port: int = 50050, http_port: int | None = None,
                       with_drift: bool = True,
                       colocate: bool | str | Iterable[str] = False, limits: str = DEMO_LIMITS,
                       api_keys: str = f"{DEMO_KEY}=demo,{LIMITED_KEY}=limited",
                       extra_env: dict[str, dict[str, str]] | None = None, otel: str | None = None) -> System:
    """``colocate``: the ingress decides limits and answers hits in its own process (the limiter
    and cache services still run, for the router's provider quotas and cache Stats/Invalidate);
    True for the limiter and cache cores, or which ("limiter,cache,router": a miss also goes
    straight from the ingress to the provider).
    ``extra_env``: more settings per service, e.g. ``{"cache": {"REDIS_TIMEOUT_S": "1"}}``.
    ``otel``: traces on in every service, to ``<workdir>/traces/<service>.jsonl`` ("file") or to
    their logs ("console"); an OTEL_* collector setting in the environment is passed on as is."""
    logs = workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    system = System(workdir)
    used = system.used_ports  # every port handed out here, so no two processes get the same one
    used.add(ingress_port)
    try:
        redis = start_redis(free_port(used), log=logs / "redis.log")
        system.procs.append(redis)
        tansu = start_tansu(free_port(used), log=logs / "tansu.log")
        system.procs.append(tansu)
        system.kafka = tansu.address
        _say(f"redis on {redis.address}, kafka (tansu) on {tansu.address}")
        await ensure_topics(tansu.address)
        _say("topics llm.requests, llm.responses, llm.drift created")

        env: dict[str, str] = {"LOG_LEVEL": "info", "PYTHONUNBUFFERED": "1"}
        if not (os.environ.get("OPENAI_API_KEY") and os.environ.get("ANTHROPIC_API_KEY")):
            port = free_port(used)
            system.procs.append(spawn("fake-providers", [sys.executable, "-m", "llmgw.fakeproviders", "--port",
                                                          str(port)], port, log=logs / "fake-providers.log"))
            wait_tcp("127.0.0.1", port)
            system.fake_url = f"http://127.0.0.1:{port}"
            if not os.environ.get("OPENAI_API_KEY"):
                env["OPENAI_BASE_URL"] = f"{system.fake_url}/v1"
                env["OPENAI_API_KEY"] = "fake-openai-key"
            if not os.environ.get("ANTHROPIC_API_KEY"):
                env["ANTHROPIC_BASE_URL"] = system.fake_url
                env["ANTHROPIC_API_KEY"] = "fake-anthropic-key"
            _say(f"fake providers on {system.fake_url} (set OPENAI_API_KEY/ANTHROPIC_API_KEY for real ones)")
        limits_file = workdir / "limits.yaml"
        limits_file.write_text(limits)
        ports = {name: free_port(used) for name in ("limiter", "cache", "router", "drift")}
        ports["ingress"] = ingress_port
        system.http_addr = f"127.0.0.1:{http_port or free_port(used)}"
        common = {**env, "REDIS_URL": f"redis://{redis.address}/0", "KAFKA_BOOTSTRAP": tansu.address}
        if otel == "file":
            common["LLMGW_TRACES_DIR"] = str(workdir / "traces")
        elif otel == "console":
            common["OTEL_TRACES_EXPORTER"] = "console"
        services = service_settings(common, ports, redis_url=f"redis://{redis.address}/0", limits_file=limits_file,
                                    api_keys=api_keys, workdir=workdir, http_addr=system.http_addr,
                                    cores=_cores(colocate), with_drift=with_drift, extra_env=extra_env)
        system.ingress_env = {**common, **services["ingress"]}
        spawned: dict[str, float] = {}
        for name in ("limiter", "cache", "router", "drift", "ingress"):
            if name not in services:
                continue
            spawned[name] = time.monotonic()
            metrics = free_port(used)
            proc_env = {**common, **services[name], "PORT": str(ports[name]), "METRICS_PORT": str(metrics)}
            _say(f"{name:<8} starting: gRPC 127.0.0.1:{ports[name]}, metrics http://127.0.0.1:{metrics}/metrics")
            system.procs.append(spawn(name, [sys.executable, "-m", f"llmgw.services.{name}"], ports[name],
                                      log=logs / f"{name}.log", env=proc_env))

        async def serving(name: str) -> None:
            # drift loads the embedding model first: give it longer.
            await _wait_serving(system, name, f"127.0.0.1:{ports[name]}", 120 if name == "drift" else 30)
            system.serving_s[name] = time.monotonic() - spawned[name]
            _say(f"{name:<8} SERVING on 127.0.0.1:{ports[name]} after {system.serving_s[name]:.1f} s")

        await asyncio.gather(*(serving(name) for name in spawned))
        system.ingress_addr = f"127.0.0.1:{ports['ingress']}"
        return system
    except BaseException:
        system.stop()
        raise


async def _run(args_demo: bool, exit_after: bool, workdir: Path, port: int, colocate: bool | str, http_port: int,
               otel: str | None) -> int:
    system = await start_system(workdir, ingress_port=port, colocate=colocate, http_port=http_port, otel=otel)
    if otel == "file":
        _say(f"traces in {workdir}/traces/<service>.jsonl")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        if args_demo:
            await run_demo(system.ingress_addr, kafka=system.kafka, fake_url=system.fake_url,
                           http_addr=system.http_addr, keys_redis=system.ingress_env["KEYS_REDIS_URL"])
        if exit_after:
            return 0
        _say(f"gateway ready on {system.ingress_addr} (gRPC) and http://{system.http_addr}/v1 (OpenAI-compatible), "
             f"API key {DEMO_KEY!r}; more keys: llmgw keys create --tenant T --redis-url "
             f"{system.ingress_env['KEYS_REDIS_URL']}; logs in {workdir}/logs; Ctrl-C stops")
        while not stop.is_set():
            system.check_alive()
            await asyncio.wait({asyncio.ensure_future(stop.wait())}, timeout=1.0)
        return 0
    finally:
        _say("stopping")
        system.stop()
        _say("stopped; no process left behind")


def main(*, demo: bool, exit_after_demo: bool, workdir: str, port: int, colocate: bool | str = False,
         http_port: int = 8080, otel: str | None = None) -> int:
    return asyncio.run(_run(demo, exit_after_demo, Path(workdir).resolve(), port, colocate, http_port, otel))
