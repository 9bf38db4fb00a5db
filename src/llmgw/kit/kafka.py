"""Kafka plumbing: topic names, explicit topic creation, and the non-blocking event publisher.

The request path only enqueues into a bounded queue; a background task batches to the broker.
While the broker is unreachable, events wait in the queue and the producer keeps reconnecting;
only a full queue drops (counted, logged). Idempotence is a setting: on for Apache Kafka, off for
the embedded Tansu broker, which refuses InitProducerId.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from aiokafka.helpers import create_ssl_context
from prometheus_client import Counter, Gauge

from llmgw.kit.logging import get_logger

__all__ = ["DRIFT_TOPIC", "REQUESTS_TOPIC", "RESPONSES_TOPIC", "KafkaPublisher", "ensure_topics"]

REQUESTS_TOPIC = "llm.requests"
RESPONSES_TOPIC = "llm.responses"
DRIFT_TOPIC = "llm.drift"
AUDIT_TOPIC = "llm.audit"
DEFAULT_TOPICS = {REQUESTS_TOPIC: 3, RESPONSES_TOPIC: 3, DRIFT_TOPIC: 1, AUDIT_TOPIC: 1}

_log = get_logger(__name__)
QUEUE_DEPTH = Gauge("llmgw_events_queue_depth", "Events waiting to be published")
PUBLISHED = Counter("llmgw_events_published_total", "Events acknowledged by the broker", ["topic"])
DROPPED = Counter("llmgw_events_dropped_total", "Events dropped because the queue was full", ["topic"])


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


class KafkaPublisher:
    """``llmgw.ports.EventSink`` over aiokafka. ``start``/``stop`` are explicit; stop is idempotent."""

    def __init__(
        self,
        bootstrap: str,
        *,
        queue_size: int = 10_000,
        idempotent: bool = False,
        linger_ms: int = 5,
        batch: int = 500,
        security: KafkaSecurity | None = None,
    ) -> None:
        self._bootstrap = bootstrap
        self._queue: asyncio.Queue[tuple[str, bytes, bytes]] = asyncio.Queue(maxsize=queue_size)
        self._idempotent = idempotent
        self._linger_ms = linger_ms
        self._batch = batch
        self._security = security or KafkaSecurity()
        self._task: asyncio.Task[None] | None = None
        self._producer: AIOKafkaProducer | None = None
        self._connecting: AIOKafkaProducer | None = None
        self.connected = asyncio.Event()

    def publish(self, topic: str, key: str, value: bytes) -> None:
        try:
            self._queue.put_nowait((topic, key.encode(), value))
        except asyncio.QueueFull:
            DROPPED.labels(topic).inc()
            _log.error("event_dropped_queue_full", topic=topic, key=key)
            return
        QUEUE_DEPTH.set(self._queue.qsize())

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="kafka-publisher")

    async def _connect(self) -> AIOKafkaProducer:
        delay = 0.2
        while True:
            producer = AIOKafkaProducer(
                bootstrap_servers=self._bootstrap,
                acks="all",
                enable_idempotence=self._idempotent,
                linger_ms=self._linger_ms,
                request_timeout_ms=10_000,
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
            self.connected.set()
            _log.info("kafka_connected", bootstrap=self._bootstrap)
            return producer

    async def _run(self) -> None:
        self._producer = await self._connect()
        while True:
            first = await self._queue.get()
            batch = [first]
            while len(batch) < self._batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            await self._send(batch)
            QUEUE_DEPTH.set(self._queue.qsize())

    async def _send(self, batch: list[tuple[str, bytes, bytes]]) -> None:
        # Keep sending the same batch until the broker takes it: nothing is lost to a blip.
        while True:
            assert self._producer is not None
            try:
                futures = [await self._producer.send(t, value=v, key=k) for t, k, v in batch]
                await asyncio.gather(*futures)
            except (KafkaError, OSError) as exc:
                _log.warning("kafka_send_failed", error=repr(exc), events=len(batch))
                await asyncio.sleep(0.5)
                continue
            for t, _, _ in batch:
                PUBLISHED.labels(t).inc()
            return

    async def flush(self, timeout_s: float = 5.0) -> bool:
        """Wait until the queue is empty (or the timeout); True when everything was handed over."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while self._queue.qsize() and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        if self._producer is not None:
            with contextlib.suppress(KafkaError, OSError):
                async with asyncio.timeout(max(0.1, deadline - asyncio.get_running_loop().time())):
                    await self._producer.flush()
        return self._queue.qsize() == 0

    async def stop(self, timeout_s: float = 5.0) -> None:
        if self._task is None:
            return
        await self.flush(timeout_s)
        task, self._task = self._task, None
        task.cancel()
        # aiokafka can swallow a cancel that lands inside producer.start(): never wait forever.
        await asyncio.wait({task}, timeout=2.0)
        if self._connecting is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2.0):
                    await self._connecting.stop()
        if self._producer is not None:
            with contextlib.suppress(Exception):
                await self._producer.stop()
            self._producer = None

    async def ready(self) -> bool:
        return self.connected.is_set()

