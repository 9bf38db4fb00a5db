"""An append-only on-disk spool of events, for while the broker is away or the queue is full.

Records are length-prefixed (``>I`` length, then topic, key and value, each ``>I``-prefixed), so
a torn write at a crash is detected and cut, never misread. Two segments: ``current`` takes
appends; a replay renames it to ``replaying`` first, so appends and replay never touch the same
file, and a crash mid-replay leaves ``replaying`` to be sent first at the next start (events are
then possibly sent twice: consumers de-duplicate by request id).
"""

from __future__ import annotations

import fcntl
import os
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["Record", "Spool", "claim_spool_dir", "default_spool_dir"]

Record = tuple[str, bytes, bytes]  # topic, key, value
_LEN = struct.Struct(">I")


def _encode(rec: Record) -> bytes:
    topic, key, value = rec
    parts = [topic.encode(), key, value]
    body = b"".join(_LEN.pack(len(p)) + p for p in parts)
    return _LEN.pack(len(body)) + body


def _decode(data: bytes) -> Iterator[Record]:
    pos = 0
    while pos + 4 <= len(data):
        (size,) = _LEN.unpack_from(data, pos)
        if pos + 4 + size > len(data):
            return  # a torn final record (crash mid-write): ignore it
        body, parts, p = data[pos + 4 : pos + 4 + size], [], 0
        for _ in range(3):
            (n,) = _LEN.unpack_from(body, p)
            parts.append(body[p + 4 : p + 4 + n])
            p += 4 + n
        yield parts[0].decode(), parts[1], parts[2]
        pos += 4 + size


def default_spool_dir(service: str, port: int) -> Path:
    """The same directory at every start of a service on a port (``$LLMGW_STATE_DIR``, else
    ``~/.local/state/llmgw``), so a restarted process finds and replays what it spooled."""
    base = Path(os.environ.get("LLMGW_STATE_DIR") or Path.home() / ".local" / "state" / "llmgw")
    return base / "spool" / f"{service}-{port}"


def claim_spool_dir(directory: Path) -> tuple[Path, int]:
    """Lock ``directory`` for this process (``flock`` on a lock file, released when the process
    dies, SIGKILL included). Taken by another live process (two in-process stacks of the tests,
    say), a fresh temporary directory is used instead: two publishers must never share a spool.
    Returns the directory and the lock's file descriptor (kept open for the process's life)."""
    for candidate in (directory, None):
        path = candidate if candidate is not None else Path(tempfile.mkdtemp(prefix="llmgw-spool-"))
        path.mkdir(parents=True, exist_ok=True)
        fd = os.open(path / ".lock", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return path, fd
    raise RuntimeError("unreachable: a fresh temporary directory is never locked")


class Spool:
    """Blocking file operations; the publisher calls them off the event loop."""

    def __init__(self, directory: Path, *, max_bytes: int) -> None:
        self._dir = directory
        self._dir.mkdir(parents=True, exist_ok=True)
        self._current = directory / "current.spool"
        self._replaying = directory / "replaying.spool"
        self.max_bytes = max_bytes

    @property
    def size(self) -> int:
        return sum(p.stat().st_size for p in (self._current, self._replaying) if p.exists())

    def _fit(self, records: list[Record]) -> tuple[bytes, int]:
        """The encoded prefix of ``records`` that fits under the size cap, and its length."""
        room = self.max_bytes - self.size
        blob, taken = bytearray(), 0
        for rec in records:
            enc = _encode(rec)
            if len(blob) + len(enc) > room:
                break
            blob += enc
            taken += 1
        return bytes(blob), taken

    def append(self, records: list[Record]) -> int:
        """Append and fsync; returns how many fit under the size cap (the rest are refused)."""
        blob, taken = self._fit(records)
        if blob:
            _write_synced(self._current, "ab", blob)
        return taken

    def prepend(self, records: list[Record]) -> int:
        """Put ``records`` before everything spooled (they are older: at a stop, the events still
        in memory predate what the spool holds). Returns how many fit under the size cap."""
        blob, taken = self._fit(records)
        if blob:
            existing = b"".join(p.read_bytes() for p in (self._replaying, self._current) if p.exists())
            tmp = self._dir / "current.spool.tmp"
            _write_synced(tmp, "wb", blob + existing)
            os.replace(tmp, self._current)
            self._replaying.unlink(missing_ok=True)
        return taken

    def take(self) -> list[Record]:
        """Everything spooled, oldest first; the segments stay on disk until ``done()``. (Small
        spools and tests; the publisher reads what it took in chunks with ``read``.)"""
        self.begin_replay()
        if not self._replaying.exists():
            return []
        return list(_decode(self._replaying.read_bytes()))

    def begin_replay(self) -> None:
        """Move the current segment aside for replay (unless one is being replayed already):
        appends from here on go to a new current segment."""
        if not self._replaying.exists() and self._current.exists():
            os.replace(self._current, self._replaying)

    def read(self, offset: int, most: int) -> tuple[list[Record], int]:
        """Up to ``most`` records of the taken segment from byte ``offset``; and the next offset.
        ``take()`` (or this, the first time) moves the current segment aside for replay."""
        self.begin_replay()
        if not self._replaying.exists():
            return [], offset
        out: list[Record] = []
        with open(self._replaying, "rb") as f:
            f.seek(offset)
            while len(out) < most:
                head = f.read(4)
                if len(head) < 4:
                    break
                (size,) = _LEN.unpack(head)
                body = f.read(size)
                if len(body) < size:
                    break  # a torn final record (crash mid-write): ignore it
                out.extend(_decode(head + body))
                offset += 4 + size
        return out, offset

    def done(self) -> None:
        """The records of the last ``take()`` reached the broker."""
        self._replaying.unlink(missing_ok=True)

    def empty(self) -> bool:
        return self.size == 0


def _write_synced(path: Path, mode: str, data: bytes) -> None:
    """Write and fsync: a spooled event must survive a crash right after the call returns."""
    with open(path, mode) as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
