"""The Faust app factory (no module-level app: it would break tests across event loops).

One agent consumes ``llm.requests`` in batches; each batch is decoded, load-shed if it outruns
the embedding model, embedded once, and fed to every segment it touches and to the global
segment. Window metrics go to ``llm.drift.metrics`` (and Prometheus), incidents to ``llm.drift``.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import faust
from prometheus_client import Counter, Gauge

from llmgw.events.v1 import events_pb2
from llmgw.kit.embed import Embedder
from llmgw.kit.errors import ConfigError
from llmgw.kit.kafka import DRIFT_METRICS_TOPIC, DRIFT_TOPIC
from llmgw.kit.logging import get_logger
from llmgw.services.drift.detector import DriftDetector, Input, Reference
from llmgw.services.drift.sampling import Shedder
from llmgw.services.drift.settings import DriftSettings
from llmgw.services.drift.text import SEGMENT_FIELDS, input_text, segment_of

__all__ = ["GLOBAL_SEGMENT", "Batch", "Raw", "create_app", "process_window", "publish"]

_log = get_logger(__name__)
CONSUMED = Counter("llmgw_drift_events_consumed_total", "llm.requests events consumed")
UNDECODABLE = Counter("llmgw_drift_events_undecodable_total", "llm.requests events that failed to decode")
SHED = Counter("llmgw_drift_events_shed_total", "Events not embedded because input outran capacity")
PUBLISHED = Counter("llmgw_drift_records_published_total", "Drift records published", ["type"])
STATISTIC = Gauge("llmgw_drift_statistic", "Latest window statistic per segment and detector", ["segment", "detector"])
THRESHOLD = Gauge("llmgw_drift_threshold", "Calibrated threshold per segment and detector", ["segment", "detector"])
OPEN = Gauge("llmgw_drift_incident_open", "1 while an incident is open", ["segment", "detector"])
SAMPLING = Gauge("llmgw_drift_sampling_rate", "Share of events embedded (1 = all)")

GLOBAL_SEGMENT = "*"
# (topic, key, value): how records leave the job.
Send = Callable[[str, bytes, bytes], Awaitable[None]]


@dataclass(frozen=True)
class Raw:
    value: bytes
    partition: int = -1
    offset: int = -1
    timestamp: float = 0.0


@dataclass
class Batch:
    """How the job turns raw events into detector inputs (settings that shape segments and text)."""

    embedder: Embedder
    detector: DriftDetector
    shedder: Shedder | None = None
    segment_fields: Sequence[str] = SEGMENT_FIELDS
    embed_variables: dict[str, list[str]] | None = None


def process_window(raws: Sequence[Raw | bytes], batch: Batch) -> list[dict[str, Any]]:
    """Decode one batch, embed the kept inputs once, feed each segment and the global one."""
    decoded: list[tuple[events_pb2.RequestEvent, Raw]] = []
    for item in raws:
        raw = item if isinstance(item, Raw) else Raw(item)
        CONSUMED.inc()
        try:
            decoded.append((events_pb2.RequestEvent.FromString(raw.value), raw))
        except Exception:  # a bad record must not stop the stream; it is counted instead
            UNDECODABLE.inc()
    shedder = batch.shedder
    if shedder is not None:
        shedder.observe_arrivals([e.time or r.timestamp for e, r in decoded if e.time or r.timestamp])
        kept = [(e, r) for e, r in decoded if shedder.keep(e.request_id)]
        SHED.inc(len(decoded) - len(kept))
        decoded = kept
    rate = shedder.rate if shedder else 1.0
    SAMPLING.set(rate)
    with_text = [(e, r, t) for e, r in decoded if (t := input_text(e, batch.embed_variables))]
    if not with_text:
        return []
    start = time.perf_counter()
    vectors = batch.embedder.encode([t for _, _, t in with_text])
    if shedder is not None:
        shedder.observe_embedding(len(with_text), time.perf_counter() - start)
    by_segment: dict[str, list[Input]] = {GLOBAL_SEGMENT: []}
    for (e, r, t), v in zip(with_text, vectors, strict=True):
        item = Input(v, t, e.request_id, r.partition, r.offset, e.time or r.timestamp)
        by_segment[GLOBAL_SEGMENT].append(item)
        by_segment.setdefault(segment_of(e, batch.segment_fields), []).append(item)
    records: list[dict[str, Any]] = []
    for segment, items in by_segment.items():
        records += batch.detector.observe(segment, items, sampling_rate=round(rate, 4))
    return records


def observe_metrics(rec: dict[str, Any]) -> None:
    if rec["type"] == "window":
        for name, d in rec.get("detectors", {}).items():
            STATISTIC.labels(rec["segment"], name).set(d["value"])
            THRESHOLD.labels(rec["segment"], name).set(d["upper"])
    elif rec["type"] == "incident":
        OPEN.labels(rec["segment"], rec["detector"]).set(0 if rec["state"] == "CLOSED" else 1)
        _log.warning("drift_incident", segment=rec["segment"], detector=rec["detector"], state=rec["state"],
                     incident=rec["incident_id"], statistic=rec["statistic"], threshold=rec["threshold"])


async def publish(records: list[dict[str, Any]], send: Send) -> None:
    """Incidents to llm.drift, window metrics to llm.drift.metrics, both keyed by segment."""
    for rec in records:
        topic = DRIFT_TOPIC if rec["type"] == "incident" else DRIFT_METRICS_TOPIC
        await send(topic, rec["segment"].encode(), json.dumps(rec).encode())
        PUBLISHED.labels(rec["type"]).inc()
        observe_metrics(rec)


def broker_credentials(settings: DriftSettings) -> faust.SASLCredentials | faust.SSLCredentials | None:
    """The ingress's Kafka security settings, as Faust takes them (it ignores the URL's scheme)."""
    protocol = settings.kafka_security_protocol.upper()
    ssl_context = ssl.create_default_context() if protocol in ("SSL", "SASL_SSL") else None
    if protocol.startswith("SASL"):
        password = settings.kafka_sasl_password.get_secret_value() if settings.kafka_sasl_password else None
        return faust.SASLCredentials(username=settings.kafka_sasl_username, password=password,
                                     mechanism=settings.kafka_sasl_mechanism, ssl_context=ssl_context)
    if protocol == "SSL":
        return faust.SSLCredentials(ssl_context)
    if protocol != "PLAINTEXT":
        raise ConfigError(f"KAFKA_SECURITY_PROTOCOL: unknown protocol {settings.kafka_security_protocol!r}")
    return None


def create_app(settings: DriftSettings, embedder: Embedder, *, send: Send | None = None,
               loop: asyncio.AbstractEventLoop | None = None) -> faust.App:
    """``send`` replaces publishing to Kafka and ``loop`` is the running loop (agent tests under
    ``test_context()``; otherwise Faust's worker owns the loop)."""
    app = faust.App(
        settings.app_id,
        loop=loop,
        broker=f"kafka://{settings.kafka_bootstrap}",
        broker_credentials=broker_credentials(settings),
        datadir=settings.data_dir,
        store="memory://",
        autodiscover=False,
        web_enabled=False,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        broker_rebalance_timeout=settings.rebalance_timeout_s,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=settings.heartbeat_interval_s,
        broker_max_poll_interval=settings.max_poll_interval_s,
    )
    if loop is not None:
        # Faust's transport looks its loop up on its own (the policy's, not the running one).
        app.transport.loop = loop

    def raw(name: str) -> faust.TopicT:
        return app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")

    requests = raw(settings.requests_topic)
    topics = {DRIFT_TOPIC: raw(DRIFT_TOPIC), DRIFT_METRICS_TOPIC: raw(DRIFT_METRICS_TOPIC)}
    batch = Batch(embedder, DriftDetector(settings.detector()), Shedder(utilization=settings.shed_utilization),
                  settings.segment_fields(), settings.embed_variables)
    baselines = Baselines(settings, batch.detector)

    async def to_kafka(topic: str, key: bytes, value: bytes) -> None:
        await topics[topic].send(key=key, value=value)

    @app.agent(requests)
    async def detect(stream: faust.StreamT[bytes]) -> AsyncIterator[int]:
        loop = asyncio.get_running_loop()
        # take_events (not take): the window's partitions and offsets go into every record.
        async for events in stream.take_events(settings.batch_size,  # type: ignore[attr-defined]
                                               within=settings.batch_seconds):
            raws = [Raw(e.value, e.message.partition, e.message.offset, e.message.timestamp) for e in events]
            # Embedding is CPU work: off the event loop so heartbeats keep flowing.
            records = await loop.run_in_executor(None, process_window, raws, batch)
            records += await baselines.sync()
            await publish(records, send or to_kafka)
            yield len(records)

    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def close_store(sender: object, **_: object) -> None:
        await baselines.close()

    return app


class Baselines:
    """Keeps the detector and the baseline store in step: saves new provisional references and
    rolling samples, and switches a segment to a newly accepted reference."""

    def __init__(self, settings: DriftSettings, detector: DriftDetector) -> None:
        self._settings = settings
        self._detector = detector
        self._store: Any = None
        self._last_poll = self._last_snapshot = 0.0
        self._accepted: dict[str, str] = {}

    async def _connect(self) -> Any:
        if self._store is None and self._settings.redis_url:
            from llmgw.kit.redis import connect
            from llmgw.services.drift.baselines import BaselineStore

            self._store = BaselineStore(connect(self._settings.redis_url, self._settings.redis_password))
        return self._store

    async def sync(self) -> list[dict[str, Any]]:
        store = await self._connect()
        out: list[dict[str, Any]] = []
        if store is None:
            self._detector.new_references.clear()
            return out
        try:
            while self._detector.new_references:
                await store.save(self._detector.new_references.pop(0), "provisional")
            now = time.monotonic()
            if now - self._last_snapshot >= self._settings.recent_snapshot_s:
                self._last_snapshot = now
                for ref in self._detector.recent_samples():
                    await store.save(ref, "recent")
            if now - self._last_poll >= self._settings.baseline_poll_s:
                self._last_poll = now
                out += await self._switch(store)
        except Exception as exc:  # the store is an aid: detection goes on without it
            _log.warning("baseline_store_unavailable", error=str(exc))
        return out

    async def _switch(self, store: Any) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for segment in self._detector.segments():
            accepted = await store.accepted_id(segment)
            current = self._detector.reference(segment)
            if accepted and (current is None or current.id != accepted):
                ref: Reference | None = await store.load(segment, "accepted")
                if ref is not None:
                    out += self._detector.set_reference(ref)
                    _log.info("baseline_switched", segment=segment, reference=ref.id, by=ref.accepted_by)
        return out

    async def close(self) -> None:
        if self._store is not None:
            await self._store.close()
