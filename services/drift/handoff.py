"""The detector's state outside the process: versioned references, recent samples and open
incidents in Redis (``baselines.BaselineStore``), so a segment can move between replicas.

Each segment's inputs reach one replica (``llm.requests`` is keyed by segment). When a rebalance
moves a partition, the replica losing it has saved the state of its segments (at the revocation,
at shutdown, and every ``recent_snapshot_s``; open and closed incidents at once), and the replica
gaining it adopts each segment the first time it sees it: the reference in force, the newest
inputs as history, and the open incidents measured against that reference. So an incident is
opened once, stays open across the move, and is closed by whoever holds the segment then; and
detection goes on at once instead of after a new reference fills.

All detector work runs on one thread (``DetectorThread``): the two agents and the rebalance hooks
share the detector, so even taking its sets of new segments and changed states goes through it.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from prometheus_client import Counter

from llmgw.kit.logging import get_logger
from llmgw.services.drift.detector import DriftDetector, Reference
from llmgw.services.drift.settings import DriftSettings

__all__ = ["Baselines", "DetectorThread"]

_log = get_logger(__name__)
ADOPTED = Counter("llmgw_drift_segments_adopted_total", "Segments taken over from another replica's state")
SAVED = Counter("llmgw_drift_states_saved_total", "Segment states saved for the next owner", ["why"])

T = TypeVar("T")


class DetectorThread:
    """One thread for every call into the detector: embedding and scoring stay off the event loop
    (heartbeats keep flowing) and never race each other."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="drift-detector")

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class Baselines:
    """Keeps the detector and the baseline store in step: saves new provisional references, rolling
    samples and incident state; adopts segments other replicas ran; switches a segment to a newly
    accepted reference."""

    def __init__(self, settings: DriftSettings, detector: DriftDetector, thread: DetectorThread) -> None:
        self._settings = settings
        self._detector = detector
        self._thread = thread
        self._store: Any = None
        self._last_poll = self._last_snapshot = 0.0

    async def _connect(self) -> Any:
        if self._store is None and self._settings.redis_url:
            from llmgw.kit.redis import connect
            from llmgw.services.drift.baselines import BaselineStore

            self._store = BaselineStore(connect(self._settings.redis_url, self._settings.redis_password))
        return self._store

    async def sync(self) -> list[dict[str, Any]]:
        """After each window: adopt new segments, save what changed; returns records to publish."""
        store = await self._connect()
        out: list[dict[str, Any]] = []
        detector = self._detector
        if store is None:
            detector.new_references.clear()
            fresh = await self._thread.run(detector.take_new_segments)
            await self._thread.run(detector.looked_up, fresh)  # nowhere to look: they fill here
            await self._thread.run(detector.take_changed_states)
            return out
        try:
            out += await self._adopt(store)
            while detector.new_references:
                await store.save(detector.new_references.pop(0), "provisional")
            changed = await self._thread.run(detector.take_changed_states)
            if changed:
                await self._save(store, changed, why="incident", samples=False)
            now = time.monotonic()
            if now - self._last_snapshot >= self._settings.recent_snapshot_s:
                self._last_snapshot = now
                await self._save(store, None, why="snapshot")
            if now - self._last_poll >= self._settings.baseline_poll_s:
                self._last_poll = now
                out += await self._switch(store)
        except Exception as exc:  # the store is an aid: detection goes on without it
            _log.warning("baseline_store_unavailable", error=str(exc))
        return out

    async def save_all(self, why: str) -> None:
        """Every segment's state, for whoever holds its partition next (a rebalance, a shutdown)."""
        store = await self._connect()
        if store is None:
            return
        try:
            await self._save(store, None, why=why)
        except Exception as exc:
            _log.warning("baseline_store_unavailable", error=str(exc))

    async def _save(self, store: Any, segments: set[str] | None, *, why: str, samples: bool = True) -> None:
        names = segments if segments is not None else set(await self._thread.run(self._detector.segments))
        states = await self._thread.run(lambda: {n: self._detector.export_state(n) for n in names})
        recent = await self._thread.run(self._detector.recent_samples, names) if samples else []
        for ref in recent:
            await store.save(ref, "recent")
        for name, state in states.items():
            if state is not None:
                await store.save_state(name, state)
                SAVED.labels(why).inc()

    async def _adopt(self, store: Any) -> list[dict[str, Any]]:
        """Segments first seen here: go on from another replica's reference and state, if any."""
        detector = self._detector
        fresh = await self._thread.run(detector.take_new_segments)
        left = sorted(fresh)
        out: list[dict[str, Any]] = []
        try:
            while left:
                segment = left[0]
                ref: Reference | None = (await store.load(segment, "accepted")
                                         or await store.load(segment, "provisional"))
                if ref is not None:
                    recent = await store.load(segment, "recent")
                    state = await store.load_state(segment)
                    out += await self._thread.run(detector.adopt, ref, recent, state)
                    ADOPTED.inc()
                    _log.info("drift_segment_adopted", segment=segment, reference=ref.id,
                              open_incidents=sorted((state or {}).get("opened", {})))
                # else: a segment nobody has run yet: its reference fills here.
                await self._thread.run(detector.looked_up, [segment])
                left.pop(0)
        except BaseException:
            # The store failed mid-way: the rest are looked up again at the next sync, not left
            # to fill a reference another replica already has.
            await self._thread.run(lambda: detector.looked_up(left, retry=True))
            raise
        return out

    async def _switch(self, store: Any) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for segment in await self._thread.run(self._detector.segments):
            accepted = await store.accepted_id(segment)
            current = self._detector.reference(segment)
            if accepted and (current is None or current.id != accepted):
                ref: Reference | None = await store.load(segment, "accepted")
                if ref is not None:
                    out += await self._thread.run(self._detector.set_reference, ref)
                    _log.info("baseline_switched", segment=segment, reference=ref.id, by=ref.accepted_by)
        return out

    async def close(self) -> None:
        if self._store is not None:
            await self._store.close()
