"""The Faust app factory (no module-level app: it would break tests across event loops)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import faust
from prometheus_client import Counter, Gauge

from llmgw.events.v1 import events_pb2
from llmgw.kit.embed import Embedder
from llmgw.kit.kafka import DRIFT_TOPIC
from llmgw.kit.logging import get_logger
from llmgw.services.drift.detector import DriftDetector
from llmgw.services.drift.settings import DriftSettings
from llmgw.services.drift.text import input_text, segment_of

__all__ = ["GLOBAL_SEGMENT", "create_app", "process_window"]

_log = get_logger(__name__)
CONSUMED = Counter("llmgw_drift_events_consumed_total", "llm.requests events consumed")
UNDECODABLE = Counter("llmgw_drift_events_undecodable_total", "llm.requests events that failed to decode")
PUBLISHED = Counter("llmgw_drift_records_published_total", "Drift records published", ["segment"])
SCORE = Gauge("llmgw_drift_centroid_distance", "Latest window's centroid cosine distance", ["segment"])

GLOBAL_SEGMENT = "*"


def process_window(values: list[bytes], embedder: Embedder, detector: DriftDetector) -> list[dict[str, Any]]:
    """Decode one window of llm.requests values, embed them once, feed each segment and the global one."""
    events = []
    for raw in values:
        CONSUMED.inc()
        try:
            events.append(events_pb2.RequestEvent.FromString(raw))
        except Exception:  # a bad record must not stop the stream; it is counted instead
            UNDECODABLE.inc()
    with_text = [(e, t) for e in events if (t := input_text(e))]
    if not with_text:
        return []
    events = [e for e, _ in with_text]
    texts = [t for _, t in with_text]
    vectors = embedder.encode(texts)
    by_segment: dict[str, list[int]] = {GLOBAL_SEGMENT: list(range(len(events)))}
    for i, e in enumerate(events):
        by_segment.setdefault(segment_of(e), []).append(i)
    records = []
    for segment, idx in by_segment.items():
        rec = detector.observe(
            segment, vectors[idx], [texts[i] for i in idx], [events[i].request_id for i in idx]
        )
        if rec is not None:
            records.append(rec)
    return records


def create_app(settings: DriftSettings, embedder: Embedder) -> faust.App:
    app = faust.App(
        settings.app_id,
        broker=f"kafka://{settings.kafka_bootstrap}",
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
    requests = app.topic(settings.requests_topic, key_type=bytes, value_type=bytes, key_serializer="raw",
                         value_serializer="raw")
    drift = app.topic(DRIFT_TOPIC, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
    detector = DriftDetector(reference_size=settings.reference_size)

    @app.agent(requests)
    async def embed_requests(stream: faust.StreamT[bytes]) -> AsyncIterator[dict[str, Any]]:
        loop = asyncio.get_running_loop()
        async for values in stream.take(settings.window_size, within=settings.window_seconds):
            # Embedding is CPU work: off the event loop so heartbeats keep flowing.
            records = await loop.run_in_executor(None, process_window, list(values), embedder, detector)
            for rec in records:
                await drift.send(key=rec["segment"].encode(), value=json.dumps(rec).encode())
                PUBLISHED.labels(rec["segment"]).inc()
                SCORE.labels(rec["segment"]).set(rec["statistics"]["centroid_cosine_distance"])
                _log.info("drift_window", segment=rec["segment"], n=rec["window"]["n"],
                          distance=rec["statistics"]["centroid_cosine_distance"])
                yield rec

    return app
