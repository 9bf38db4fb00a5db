"""An append-only on-disk spool of events, for while the broker is away or the queue is full.

Records are length-prefixed (``>I`` length, then topic, key and value, each ``>I``-prefixed), so
a torn write at a crash is detected and cut, never misread. Two segments: ``current`` takes
appends; a replay renames it to ``replaying`` first, so appends and replay never touch the same
file, and a crash mid-replay leaves ``replaying`` to be sent first at the next start (events are
then possibly sent twice: consumers de-duplicate by request id).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from pathlib import Path

__all__ = ["Record", "Spool"]

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
        """Everything spooled, oldest first; the segments stay on disk until ``done()``."""
        if not self._replaying.exists() and self._current.exists():
            os.replace(self._current, self._replaying)
        if not self._replaying.exists():
            return []
        return list(_decode(self._replaying.read_bytes()))

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
