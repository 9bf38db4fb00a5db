"""The Faust app factory (no module-level app: it would break tests across event loops).

One agent consumes ``llm.requests`` in batches; each batch is decoded, load-shed if it outruns
the embedding model, embedded once, and fed to every segment it touches. ``llm.requests`` is keyed
by segment, so with several replicas each segment is scored by exactly one of them. The global
segment (every input) needs every input in one place: each replica forwards its embedded inputs
(not the text's embedding work again) to ``llm.drift.global``, a one-partition topic whose single
owner scores the global segment (``GLOBAL_SEGMENT=topic``; ``local`` scores it in place, right for
one replica; ``off``). Window metrics go to ``llm.drift.metrics`` (and Prometheus), incidents to
``llm.drift``. Segment state moves with its partition (see ``handoff``).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence, Set
from dataclasses import dataclass, field
from typing import Any

import faust
import numpy as np
from prometheus_client import Counter, Gauge

from llmgw.events.v1 import events_pb2
from llmgw.kit.embed import Embedder
from llmgw.kit.errors import ConfigError
from llmgw.kit.kafka import DRIFT_METRICS_TOPIC, DRIFT_TOPIC
from llmgw.kit.logging import get_logger
from llmgw.services.drift.detector import DriftDetector, Input
from llmgw.services.drift.handoff import Baselines, DetectorThread
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
    # "local": the global segment is scored here; "topic": its inputs wait in ``outbox`` for
    # forwarding to the global topic; "off": no global segment.
    global_segment: str = "local"
    outbox: list[Input] = field(default_factory=list)


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
    by_segment: dict[str, list[Input]] = {GLOBAL_SEGMENT: []} if batch.global_segment == "local" else {}
    for (e, r, t), v in zip(with_text, vectors, strict=True):
        item = Input(v, t, e.request_id, r.partition, r.offset, e.time or r.timestamp)
        if batch.global_segment == "local":
            by_segment[GLOBAL_SEGMENT].append(item)
        elif batch.global_segment == "topic":
            batch.outbox.append(item)
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


async def publish(records: list[dict[str, Any]], send: Send, *, worker: str = "") -> None:
    """Incidents to llm.drift, window metrics to llm.drift.metrics, both keyed by segment;
    ``worker``: the replica that scored them (host:pid), in every record."""
    for rec in records:
        if worker:
            rec["worker"] = worker
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
    global_topic = raw(settings.global_topic)
    topics = {DRIFT_TOPIC: raw(DRIFT_TOPIC), DRIFT_METRICS_TOPIC: raw(DRIFT_METRICS_TOPIC),
              settings.global_topic: global_topic}
    batch = Batch(embedder, DriftDetector(settings.detector()), Shedder(utilization=settings.shed_utilization),
                  settings.segment_fields(), settings.embed_variables, settings.global_segment)
    thread = DetectorThread()
    batch.detector.defer_new_segments = bool(settings.redis_url)
    baselines = Baselines(settings, batch.detector, thread)

    async def to_kafka(topic: str, key: bytes, value: bytes) -> None:
        await topics[topic].send(key=key, value=value)

    out = send or to_kafka
    worker = f"{socket.gethostname()}:{os.getpid()}"

    @app.agent(requests)
    async def detect(stream: faust.StreamT[bytes]) -> AsyncIterator[int]:
        # take_events (not take): the window's partitions and offsets go into every record.
        async for events in stream.take_events(settings.batch_size,  # type: ignore[attr-defined]
                                               within=settings.batch_seconds):
            raws = [Raw(e.value, e.message.partition, e.message.offset, e.message.timestamp) for e in events]
            # Embedding is CPU work: off the event loop so heartbeats keep flowing.
            records = await thread.run(process_window, raws, batch)
            if batch.outbox:
                forward, batch.outbox = batch.outbox, []
                rate = batch.shedder.rate if batch.shedder else 1.0
                await out(settings.global_topic, GLOBAL_SEGMENT.encode(), pack_inputs(forward, rate))
            records += await baselines.sync()
            await publish(records, out, worker=worker)
            yield len(records)

    @app.agent(global_topic)
    async def score_global(stream: faust.StreamT[bytes]) -> AsyncIterator[int]:
        # Only the replica holding the topic's one partition gets here.
        async for value in stream:
            items, rate = unpack_inputs(value)
            records = await thread.run(batch.detector.observe, GLOBAL_SEGMENT, items, sampling_rate=rate)
            records += await baselines.sync()
            await publish(records, out, worker=worker)
            yield len(records)

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def save_states(sender: object, revoked: object = None, **_: object) -> None:
        # Eager rebalancing: every partition is revoked, then some given back. Whoever gets a
        # segment next starts from the state saved here.
        await baselines.save_all("rebalance")

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def forget_moved(sender: object, assigned: Set[Any] | None = None, **_: object) -> None:
        assigned = assigned or set()
        mine = {tp.partition for tp in assigned if tp.topic == settings.requests_topic}
        scores_global = any(tp.topic == settings.global_topic for tp in assigned)
        gone = await thread.run(batch.detector.retain,
                                lambda name, partition: scores_global if name == GLOBAL_SEGMENT else partition in mine)
        if gone:
            _log.info("drift_segments_moved_away", segments=gone)

    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def close_store(sender: object, **_: object) -> None:
        await baselines.save_all("shutdown")
        await baselines.close()
        thread.close()

    return app


def pack_inputs(items: Sequence[Input], sampling_rate: float) -> bytes:
    """Embedded inputs for the global topic: one record per window (float16 vectors: ~0.8 KB an
    input at 384 dimensions, plus its text)."""
    vectors = np.stack([i.vector for i in items]).astype(np.float16)
    return json.dumps({
        "rate": sampling_rate, "dim": int(vectors.shape[1]), "vectors": base64.b64encode(vectors.tobytes()).decode(),
        "inputs": [[i.text, i.request_id, i.partition, i.offset, i.time] for i in items],
    }).encode()


def unpack_inputs(value: bytes) -> tuple[list[Input], float]:
    doc = json.loads(value)
    vectors = np.frombuffer(base64.b64decode(doc["vectors"]), dtype=np.float16).reshape(-1, doc["dim"])
    items = [Input(v.astype(np.float32), text, rid, partition, offset, at)
             for v, (text, rid, partition, offset, at) in zip(vectors, doc["inputs"], strict=True)]
    return items, float(doc["rate"])
