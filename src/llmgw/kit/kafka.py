"""Kafka plumbing: topic names, explicit topic creation, and the non-blocking event publisher.

The request path only enqueues into a bounded queue; a background task batches to the broker.
While the broker is unreachable or the queue is full, events go to an on-disk spool that is
replayed in order when the broker returns; only a full spool drops (counted, alarmed).
Idempotence is a setting: on for Apache Kafka, off for the embedded Tansu broker, which refuses
InitProducerId; consumers de-duplicate by request id (the record key).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import tempfile
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    InvalidTopicError,
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    TopicAlreadyExistsError,
)
from aiokafka.helpers import create_ssl_context
from prometheus_client import Counter, Gauge, Histogram

from llmgw.kit.logging import get_logger
from llmgw.kit.metrics import child
from llmgw.kit.spool import Record, Spool, claim_spool_dir

__all__ = ["DRIFT_GLOBAL_TOPIC", "DRIFT_METRICS_TOPIC", "DRIFT_TOPIC", "REQUESTS_TOPIC", "RESPONSES_TOPIC",
           "DiscardingSink", "KafkaPublisher", "by_key", "ensure_topics"]

REQUESTS_TOPIC = "llm.requests"
RESPONSES_TOPIC = "llm.responses"
DRIFT_TOPIC = "llm.drift"
# Per-window drift metrics of every segment (incidents go to llm.drift).
DRIFT_METRICS_TOPIC = "llm.drift.metrics"
AUDIT_TOPIC = "llm.audit"
# The drift job's embedded inputs, forwarded to the one replica scoring the global segment: one
# partition by design.
DRIFT_GLOBAL_TOPIC = "llm.drift.global"
DEFAULT_TOPICS = {REQUESTS_TOPIC: 3, RESPONSES_TOPIC: 3, DRIFT_TOPIC: 1, DRIFT_METRICS_TOPIC: 1, AUDIT_TOPIC: 1,
                  DRIFT_GLOBAL_TOPIC: 1}

_log = get_logger(__name__)
QUEUE_DEPTH = Gauge("llmgw_events_queue_depth", "Events waiting in memory to be published")
SPOOL_BYTES = Gauge("llmgw_events_spool_bytes", "Bytes of events spooled on disk")
SPOOL_FULL = Gauge("llmgw_events_spool_full", "1 while the spool is at its cap and events are dropped (alarm)")
PUBLISHED = Counter("llmgw_events_published_total", "Events acknowledged by the broker", ["topic"])
DROPPED = Counter("llmgw_events_dropped_total", "Events dropped: only when the spool is full", ["topic"])
SPOOLED = Counter("llmgw_events_spooled_total", "Events written to the disk spool", ["reason"])
REPLAYED = Counter("llmgw_events_replayed_total", "Spooled events delivered from disk")
REJECTED = Counter("llmgw_events_rejected_total",
                   "Events the broker can never take (too large, bad topic): logged, not retried", ["topic", "reason"])
# Errors about the record itself: sending it again can never succeed. Everything else (a broker
# down, a timeout, a topic briefly missing, an authorization not granted yet) is retried.
_POISON = (MessageSizeTooLargeError, RecordListTooLargeError, InvalidTopicError)
PUBLISH_LATENCY = Histogram("llmgw_events_publish_seconds", "Broker acknowledgement time of a batch")


@dataclass(frozen=True)
class KafkaSecurity:
    """TLS/SASL for a real cluster; the defaults (plaintext) suit the embedded broker."""

    protocol: str = "PLAINTEXT"  # PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL
    sasl_mechanism: str = "PLAIN"  # PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512
    username: str | None = None
    password: str | None = None

    def client_kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {"security_protocol": self.protocol}
        if self.protocol in ("SSL", "SASL_SSL"):
            kw["ssl_context"] = create_ssl_context()
        if self.protocol.startswith("SASL"):
            kw.update(sasl_mechanism=self.sasl_mechanism, sasl_plain_username=self.username,
                      sasl_plain_password=self.password)
        return kw


async def ensure_topics(
    bootstrap: str,
    topics: Mapping[str, int] | None = None,
    *,
    replication: int = 1,
    retention_ms: int | None = None,
    security: KafkaSecurity | None = None,
) -> None:
    """Create topics explicitly (auto-created ones get the broker's default partition count)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **(security or KafkaSecurity()).client_kwargs())
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        new = [
            NewTopic(name, num_partitions=parts, replication_factor=replication,
                     topic_configs={"retention.ms": str(retention_ms)} if retention_ms else None)
            for name, parts in (topics or DEFAULT_TOPICS).items()
            if name not in existing
        ]
        if new:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(new)
    finally:
        await admin.close()


def by_key(key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
    """The producer's partitioner: the same key (a request id) always lands on the same partition,
    by CRC32 (one C call). aiokafka's default is Java's murmur2 written in Python, about 8 µs per
    event on this path; no consumer here depends on Java's placement, only on same key, same place."""
    if key is None:
        return random.choice(available or all_partitions)
    return all_partitions[zlib.crc32(key) % len(all_partitions)]


def _retrieve(f: asyncio.Future[Any]) -> None:
    if not f.cancelled():
        f.exception()  # a late failure of a spilled record: already on disk, nothing to report


def _acked(f: asyncio.Future[Any]) -> bool:
    return f.done() and not f.cancelled() and f.exception() is None


@dataclass
class _HandOver:
    """One batch handed to the producer: each record handed over is in ``sent`` (with its
    acknowledgement) or ``retry``, or was rejected for good; ``handed`` counts them, in order."""

    sent: list[tuple[Record, asyncio.Future[Any]]] = field(default_factory=list)
    retry: list[Record] = field(default_factory=list)
    handed: int = 0


class DiscardingSink:
    """An ``EventSink`` that drops everything: only the baseline of the publisher benchmark."""

    def publish(self, topic: str, key: str, value: bytes) -> None:
        return None


class KafkaPublisher:
    """``llmgw.ports.EventSink`` over aiokafka. ``start``/``stop`` are explicit; stop is idempotent.

    ``publish`` never waits: it puts the event on a bounded queue. A sender task batches the queue
    to the broker (acks=all). While a batch cannot be delivered, or the queue is full, new events
    go to the on-disk spool instead (written and fsync'd in batches by a flusher task); once the
    broker takes events again the sender delivers, in order, the failed batch, the queue, then
    the spool. Only a full spool (``spool_max_bytes``) drops events: counted and alarmed.
    """

    def __init__(
        self,
        bootstrap: str,
        *,
        queue_size: int = 10_000,
        idempotent: bool = False,
        linger_ms: int = 5,
        batch: int = 500,
        security: KafkaSecurity | None = None,
        spool_dir: Path | None = None,
        spool_max_bytes: int = 512 * 1024 * 1024,
        request_timeout_ms: int = 5_000,
        ack_timeout_s: float = 0.15,
    ) -> None:
        self._bootstrap = bootstrap
        self._queue: asyncio.Queue[Record] = asyncio.Queue(maxsize=queue_size)
        self._idempotent = idempotent
        self._linger_ms = linger_ms
        self._batch = batch
        self._security = security or KafkaSecurity()
        self._request_timeout_ms = request_timeout_ms
        # A spool belongs to one publisher: two sharing a directory would replay each other's
        # events, so the directory is locked for this process (another one's: a fresh one).
        directory, self._lock_fd = claim_spool_dir(spool_dir or Path(tempfile.mkdtemp(prefix="llmgw-spool-")))
        self._spool = Spool(directory, max_bytes=spool_max_bytes)
        # Write-ahead: a batch the broker has not acknowledged within this time goes to disk at
        # once (with the queue behind it), so a crash during a broker hang loses at most this
        # interval's events, not the producer's whole request timeout.
        self._ack_timeout_s = ack_timeout_s
        # Topics the broker's metadata confirmed (per connection): nothing is sent to a topic
        # it does not list, so a broker restarted empty is not written before its topics exist
        # again (a write to an auto-created topic is lost when the real one is created).
        self._confirmed: set[str] = set()
        # True while new events must go to the spool to keep their order behind what waits.
        self._spooling = not self._spool.empty()
        self._to_spool: list[Record] = []
        # The batch taken from the queue and not yet acknowledged: at a stop it must not be lost.
        self._inflight: list[Record] = []
        self._spool_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._producer: AIOKafkaProducer | None = None
        self._connecting: AIOKafkaProducer | None = None
        self.connected = asyncio.Event()
        SPOOL_BYTES.set(self._spool.size)

    def publish(self, topic: str, key: str, value: bytes) -> None:
        rec: Record = (topic, key.encode(), value)
        if not self._spooling:
            try:
                self._queue.put_nowait(rec)
                QUEUE_DEPTH.set(self._queue.qsize())
                return
            except asyncio.QueueFull:
                self._spooling = True
                _log.warning("event_queue_full_spooling_to_disk", queue=self._queue.maxsize)
        self._to_spool.append(rec)

    @property
    def spooling(self) -> bool:
        return self._spooling

    async def start(self) -> None:
        if not self._tasks:
            self._tasks = [asyncio.create_task(self._run(), name="kafka-publisher"),
                           asyncio.create_task(self._flusher(), name="kafka-spool-flusher")]

    async def _connect(self) -> AIOKafkaProducer:
        delay = 0.2
        while True:
            producer = AIOKafkaProducer(
                bootstrap_servers=self._bootstrap,
                acks="all",
                enable_idempotence=self._idempotent,
                linger_ms=self._linger_ms,
                partitioner=by_key,
                request_timeout_ms=self._request_timeout_ms,
                **self._security.client_kwargs(),
            )
            self._connecting = producer
            try:
                await producer.start()
            except (KafkaError, OSError) as exc:
                with contextlib.suppress(Exception):
                    await producer.stop()
                _log.warning("kafka_connect_failed", error=repr(exc), retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            self._connecting = None
            self._confirmed = set()
            self.connected.set()
            _log.info("kafka_connected", bootstrap=self._bootstrap)
            return producer

    async def _flusher(self) -> None:
        """Writes spooled events to disk in batches (one fsync per batch), off the event loop."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(0.05)
            if not self._to_spool:
                continue
            async with self._spool_lock:
                # Taken under the lock: a batch out of ``_to_spool`` and not yet on disk would let
                # the sender, finishing a replay, see nothing left and stop spooling, leaving the
                # batch on disk with nothing to replay it (a CI run lost two events this way).
                batch, self._to_spool = self._to_spool, []
                taken = await loop.run_in_executor(None, self._spool.append, batch)
                SPOOL_BYTES.set(self._spool.size)
            child(SPOOLED, "broker_away_or_queue_full").inc(taken)
            self._dropped(batch[taken:])

    def _dropped(self, lost: list[Record]) -> None:
        """Events the full spool refused: the only way an event is lost; counted and alarmed."""
        if not lost:
            return
        SPOOL_FULL.set(1)
        for topic, _, _ in lost:
            DROPPED.labels(topic).inc()
        _log.error("event_spool_full_events_dropped", dropped=len(lost), max_bytes=self._spool.max_bytes)

    async def _run(self) -> None:
        self._producer = await self._connect()
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue.empty():
                await self._deliver_from_queue(self._drain(self._batch))
                continue
            if self._spooling:
                if self._to_spool:
                    await asyncio.sleep(0.06)  # let the flusher put them on disk, in order
                    continue
                async with self._spool_lock:
                    await loop.run_in_executor(None, self._spool.begin_replay)
                # Oldest first, in bounded chunks: a spool of hundreds of MiB is never all in memory.
                offset, replayed = 0, 0
                while True:
                    chunk, offset = await loop.run_in_executor(None, self._spool.read, offset, self._batch)
                    if not chunk:
                        break
                    await self._deliver(chunk)
                    replayed += len(chunk)
                    REPLAYED.inc(len(chunk))
                async with self._spool_lock:
                    await loop.run_in_executor(None, self._spool.done)
                    SPOOL_BYTES.set(self._spool.size)
                if replayed:
                    _log.info("event_spool_replayed", events=replayed)
                if self._spool.empty() and not self._to_spool and self._queue.empty():
                    self._spooling = False  # no await since the checks: publish() sees it at once
                    SPOOL_FULL.set(0)
                continue
            first = await self._queue.get()  # idle: wait for the next event
            await self._deliver_from_queue([first, *self._drain(self._batch - 1)])

    def _drain(self, most: int) -> list[Record]:
        batch = [self._queue.get_nowait() for _ in range(min(most, self._queue.qsize()))]
        QUEUE_DEPTH.set(self._queue.qsize())
        return batch

    async def _deliver_from_queue(self, batch: list[Record]) -> None:
        self._inflight = batch
        await self._deliver(batch, spill=True)
        self._inflight = []

    async def _topics_exist(self, topics: set[str]) -> bool:
        missing = topics - self._confirmed
        if not missing:
            return True
        assert self._producer is not None
        try:
            cluster = await self._producer.client.fetch_all_metadata()
        except (KafkaError, OSError) as exc:
            _log.warning("kafka_metadata_failed", error=repr(exc))
            return False
        self._confirmed |= missing & set(cluster.topics())
        if missing - self._confirmed:
            _log.warning("kafka_topics_missing_waiting", topics=sorted(missing - self._confirmed))
            return False
        return True

    async def _spill(self, records: list[Record]) -> None:
        self._confirmed.clear()  # a broker this slow may be restarting: confirm its topics again
        await self._spill_to_disk(records)

    async def _spill_to_disk(self, records: list[Record]) -> None:
        """The broker is slow to acknowledge: ``records`` (unacknowledged, oldest) and the queue
        behind them go to disk now, before what already waits to be spooled; new events spool
        from here on. Whatever the producer still delivers of them may arrive twice
        (consumers de-duplicate by request id); nothing is lost if this process dies."""
        loop = asyncio.get_running_loop()
        async with self._spool_lock:
            self._spooling = True
            older = records + self._drain(self._queue.qsize())
            newer, self._to_spool = self._to_spool, []
            taken = await loop.run_in_executor(None, self._spool.append, older + newer)
            SPOOL_BYTES.set(self._spool.size)
        child(SPOOLED, "ack_timeout").inc(min(taken, len(older) + len(newer)))
        self._dropped((older + newer)[taken:])
        _log.warning("kafka_slow_spooling_to_disk", events=len(older) + len(newer), ack_timeout_s=self._ack_timeout_s)

    async def _deliver(self, batch: list[Record], *, spill: bool = False) -> None:
        """Send one batch until the broker acknowledged every record of it; meanwhile new events
        spool. Records are judged one by one: one the broker can never take (``_POISON``: too
        large, a bad topic) is rejected — counted and logged, never retried — and neither holds
        back nor duplicates the rest; only records that failed for a passing reason are sent again."""
        delay = 0.2
        pending = batch
        while True:
            start = time.perf_counter()
            out = _HandOver()
            if not spill:
                if not await self._hand_over(pending, out):
                    await asyncio.sleep(1.0)
                    continue
            elif not await self._hand_over_within_bound(pending, out):
                return
            sent, retry = out.sent, out.retry
            if spill and sent:
                left = max(0.0, self._ack_timeout_s - (time.perf_counter() - start))
                _, slow = await asyncio.wait([f for _, f in sent], timeout=left)
                if slow:
                    await self._spill_unacknowledged(out, [])
                    return
            results = await asyncio.gather(*(f for _, f in sent), return_exceptions=True)
            for (rec, _), result in zip(sent, results, strict=True):
                if isinstance(result, asyncio.CancelledError):
                    raise result
                if isinstance(result, BaseException):
                    self._failed_record(rec, result, retry)
                else:
                    child(PUBLISHED, rec[0]).inc()
            if not retry:
                PUBLISH_LATENCY.observe(time.perf_counter() - start)
                return
            if not self._spooling:
                self._spooling = True
                _log.warning("kafka_unavailable_spooling_to_disk", events=len(retry))
            pending = retry
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _hand_over(self, pending: list[Record], out: _HandOver) -> bool:
        """Give ``pending`` to the producer once its topics are confirmed (False: they are not)."""
        assert self._producer is not None
        if not await self._topics_exist({rec[0] for rec in pending}):
            return False
        for rec in pending:
            try:
                out.sent.append((rec, await self._producer.send(rec[0], value=rec[2], key=rec[1])))
            except (KafkaError, OSError) as exc:
                self._failed_record(rec, exc, out.retry)
            out.handed += 1
        return True

    async def _hand_over_within_bound(self, pending: list[Record], out: _HandOver) -> bool:
        """``_hand_over`` under the write-ahead bound. Handing over can itself wait: a metadata
        request, or a full producer batch waiting for the one before it to be taken (one request
        in flight per broker), which a hung broker never does, so aiokafka blocks ``send`` for
        its whole request timeout. Past the bound, what was not acknowledged goes to disk (False:
        the batch was dealt with that way)."""
        handing = asyncio.create_task(self._hand_over(pending, out))
        done, _ = await asyncio.wait({handing}, timeout=self._ack_timeout_s)
        if done and handing.result():
            return True
        if not done:
            handing.cancel()  # a record waiting for room in a batch was not appended: safe to cut
            with contextlib.suppress(asyncio.CancelledError):
                await handing
        await self._spill_unacknowledged(out, pending[out.handed:])
        return False

    async def _spill_unacknowledged(self, out: _HandOver, not_handed: list[Record]) -> None:
        """The write-ahead bound passed: what the broker has not acknowledged goes to disk, in
        the batch's order (``not_handed`` is its tail the producer never got)."""
        unacked: list[Record] = []
        for rec, f in out.sent:
            if _acked(f):
                child(PUBLISHED, rec[0]).inc()
            else:
                unacked.append(rec)
                f.add_done_callback(_retrieve)  # the producer may still settle it: nothing waits
        await self._spill(unacked + out.retry + not_handed)

    def _failed_record(self, rec: Record, exc: BaseException, retry: list[Record]) -> None:
        if not isinstance(exc, _POISON):
            # The broker may have gone and come back empty: ask its metadata again before the
            # next try instead of writing into a topic it auto-creates.
            self._confirmed.discard(rec[0])
        if isinstance(exc, _POISON):
            child(REJECTED, rec[0], type(exc).__name__).inc()
            _log.error("event_rejected_by_broker", topic=rec[0], key=rec[1].decode(errors="replace")[:64],
                       bytes=len(rec[2]), error=type(exc).__name__)
            return
        retry.append(rec)

    async def flush(self, timeout_s: float = 5.0) -> bool:
        """Wait until everything was handed to the broker (or the timeout); True when it was.
        An empty queue is not enough: the sender may have just taken the last batch and not yet
        handed it to the producer (``_inflight`` until the broker acknowledged it)."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while self._undelivered() and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        if self._producer is not None:
            with contextlib.suppress(KafkaError, OSError, TimeoutError):
                async with asyncio.timeout(max(0.1, deadline - asyncio.get_running_loop().time())):
                    await self._producer.flush()
        return not self._undelivered()

    def _undelivered(self) -> bool:
        return bool(self._queue.qsize() or self._inflight or self._spooling)

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Deliver what it can within ``timeout_s``; whatever is left goes to the spool on disk,
        so a restart sends it (nothing is lost to a shutdown)."""
        if not self._tasks:
            self._release_spool()
            return
        await self.flush(timeout_s)
        tasks, self._tasks = self._tasks, []
        # Under the spool's lock, so no task is cancelled halfway through a write of its own
        # (the write would go on in its thread, racing the ones below).
        async with self._spool_lock:
            for t in tasks:
                t.cancel()
            # aiokafka can swallow a cancel that lands inside producer.start(): never wait forever.
            await asyncio.wait(set(tasks), timeout=2.0)
            # Oldest first: the unacknowledged batch and the queue predate everything spooled (new
            # events only enter the queue while the spool is empty); the spool buffer is newest.
            older = self._inflight + self._drain(self._queue.qsize())
            newer, self._inflight, self._to_spool = self._to_spool, [], []
            kept_older, kept_newer = self._spool.prepend(older), self._spool.append(newer)
        child(SPOOLED, "stop").inc(kept_older + kept_newer)
        self._dropped(older[kept_older:] + newer[kept_newer:])
        if older or newer:
            _log.warning("events_left_in_spool_at_stop", events=kept_older + kept_newer)
        if self._connecting is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2.0):
                    await self._connecting.stop()
        if self._producer is not None:
            # What it still held is already in the spool (above): its stop may not wait on a
            # broker that no longer answers.
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5.0):
                    await self._producer.stop()
            self._producer = None
        self._release_spool()

    def _release_spool(self) -> None:
        """The spool directory is free for the next publisher (this process's restart)."""
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    async def ready(self) -> bool:
        return self.connected.is_set()
