"""Versioned references in Redis: the job saves each segment's provisional reference and a
rolling sample of recent inputs; an analyst accepts one (``llmgw drift baseline accept``), which
records who and when, and the job switches to it within ``baseline_poll_s``.

    llmgw:drift:ref:<segment>:<slot>   slot = provisional | recent | accepted  (hash)
    llmgw:drift:history:<segment>      acceptances, newest last (list of JSON)
    llmgw:drift:state:<segment>        open incidents and counters, for the next owner (JSON)
    llmgw:drift:segments               every segment seen (set)

Every command touches one key, so a Redis Cluster spreads segments over its shards.
"""

from __future__ import annotations

import io
import json
import time
import uuid
from typing import Any, Literal

import numpy as np

from llmgw.kit.errors import NotFound
from llmgw.kit.redis import Client
from llmgw.services.drift.model import Reference

__all__ = ["BaselineStore", "Slot"]

Slot = Literal["provisional", "recent", "accepted"]
PREFIX = "llmgw:drift:"


def _npy(matrix: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, matrix.astype(np.float32), allow_pickle=False)
    return buf.getvalue()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class BaselineStore:
    def __init__(self, redis: Client, prefix: str = PREFIX) -> None:
        self._r = redis
        self._p = prefix

    def _key(self, segment: str, slot: Slot) -> str:
        return f"{self._p}ref:{segment}:{slot}"

    async def save(self, ref: Reference, slot: Slot) -> None:
        await self._r.hset(self._key(ref.segment, slot), mapping={
            "id": ref.id, "status": ref.status, "vectors": _npy(ref.vectors), "texts": json.dumps(ref.texts),
            "times": json.dumps(ref.times), "created_at": ref.created_at, "accepted_by": ref.accepted_by,
            "accepted_at": ref.accepted_at,
        })
        await self._r.sadd(f"{self._p}segments", ref.segment)

    async def load(self, segment: str, slot: Slot) -> Reference | None:
        raw: dict[Any, Any] = await self._r.hgetall(self._key(segment, slot))
        if not raw:
            return None
        get = {_text(k): v for k, v in raw.items()}
        return Reference(segment, _text(get["id"]), _text(get["status"]),
                         np.load(io.BytesIO(get["vectors"]), allow_pickle=False),
                         json.loads(get["texts"]), json.loads(get["times"]), float(get["created_at"]),
                         _text(get["accepted_by"]), float(get["accepted_at"]))

    async def accepted_id(self, segment: str) -> str | None:
        value = await self._r.hget(self._key(segment, "accepted"), "id")
        return _text(value) if value else None

    async def accept(self, segment: str, source: Slot, *, by: str, note: str = "") -> Reference:
        """Make the ``source`` sample the segment's accepted reference (a new version id)."""
        ref = await self.load(segment, source)
        if ref is None:
            raise NotFound(f"segment {segment!r} has no {source} sample yet")
        previous = await self.accepted_id(segment)
        ref.id, ref.status = f"{segment}@{uuid.uuid4().hex[:8]}", "accepted"
        ref.accepted_by, ref.accepted_at = by, time.time()
        await self.save(ref, "accepted")
        await self._r.rpush(f"{self._p}history:{segment}", json.dumps({
            "id": ref.id, "previous": previous, "source": source, "by": by, "at": ref.accepted_at, "note": note,
            "n": len(ref.texts)}))
        return ref

    async def history(self, segment: str) -> list[dict[str, Any]]:
        return [json.loads(x) for x in await self._r.lrange(f"{self._p}history:{segment}", 0, -1)]

    async def save_state(self, segment: str, state: dict[str, Any]) -> None:
        """A segment's open incidents and counters, for the replica that takes it over next."""
        await self._r.set(f"{self._p}state:{segment}", json.dumps(state))

    async def load_state(self, segment: str) -> dict[str, Any] | None:
        raw = await self._r.get(f"{self._p}state:{segment}")
        return json.loads(raw) if raw else None

    async def segments(self) -> list[str]:
        return sorted(_text(s) for s in await self._r.smembers(f"{self._p}segments"))

    async def close(self) -> None:
        await self._r.aclose()
