"""Composition root of the ingress: settings -> peers (gRPC clients) + publisher -> core -> gRPC."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from redis.exceptions import RedisError

from llmgw.gateway.v1 import gateway_pb2_grpc
from llmgw.kit.health import peer_serving
from llmgw.kit.kafka import DiscardingSink, KafkaPublisher, KafkaSecurity
from llmgw.kit.logging import get_logger
from llmgw.kit.redact import Redactor, load_redaction
from llmgw.kit.redis import connect
from llmgw.kit.server import GrpcService
from llmgw.ports import EventSink
from llmgw.prompts import LabelStore, Registry
from llmgw.services.cache.server import CacheClient
from llmgw.services.ingress.auth import ApiKeys
from llmgw.services.ingress.core import Gateway
from llmgw.services.ingress.server import SERVICE_NAME, GatewayServicer
from llmgw.services.ingress.settings import IngressSettings
from llmgw.services.limiter.server import LimiterClient
from llmgw.services.router.server import RouterClient

__all__ = ["build"]

_log = get_logger(__name__)


async def _follow_labels(settings: IngressSettings, registry: Registry) -> Callable[[], Awaitable[None]]:
    """Follow the live label store, so a promote or rollback needs no restart; returns its stop."""
    if not settings.labels_redis_url:
        return _nothing
    redis = connect(settings.labels_redis_url, settings.labels_redis_password)
    store = LabelStore(redis)
    try:
        for name in registry.names():
            await store.seed(name, registry.labels(name))
        registry.apply_labels(await store.get_all(registry.names()))
    except (RedisError, OSError) as exc:  # start on the files' labels; the follower catches up
        _log.warning("label_store_unreachable_at_start", error=repr(exc))
    task = asyncio.get_running_loop().create_task(
        store.follow(registry.names(), registry.apply_labels, settings.labels_poll_s), name="labels"
    )

    async def stop() -> None:
        task.cancel()
        await asyncio.wait({task}, timeout=1.0)
        await redis.aclose()

    return stop


async def _nothing() -> None:
    return None


async def build(settings: IngressSettings) -> GrpcService:
    limiter = LimiterClient(settings.limiter_addr)
    cache = CacheClient(settings.cache_addr)
    router = RouterClient(settings.router_addr)
    security = KafkaSecurity(
        protocol=settings.kafka_security_protocol,
        sasl_mechanism=settings.kafka_sasl_mechanism,
        username=settings.kafka_sasl_username,
        password=settings.kafka_sasl_password.get_secret_value() if settings.kafka_sasl_password else None,
    )
    publisher = KafkaPublisher(
        settings.kafka_bootstrap, queue_size=settings.event_queue_size, idempotent=settings.kafka_idempotence,
        security=security,
        spool_dir=settings.spool_dir,
        spool_max_bytes=settings.spool_max_bytes,
    )
    await publisher.start()
    events: EventSink = publisher if settings.publish_events else DiscardingSink()
    registry = Registry.load(settings.prompts_dir)
    stop_labels = await _follow_labels(settings, registry)
    core = Gateway(
        limiter=limiter,
        cache=cache,
        router=router,
        events=events,
        registry=registry,
        api_keys=ApiKeys.parse(settings.api_keys.get_secret_value()),
        redactor=Redactor(load_redaction(settings.redaction_file)),
        default_label=settings.default_label,
        default_max_tokens=settings.default_max_tokens,
        limiter_fail_open=settings.limiter_fail_open,
        single_flight_wait_s=settings.single_flight_wait_s,
    )

    async def ready() -> bool:
        # The gateway needs its peers; Kafka is not required (events wait in the queue).
        checks = await asyncio.gather(*(peer_serving(c.channel) for c in (limiter, cache, router)))
        return all(checks)

    async def on_stop() -> None:
        await stop_labels()
        await core.drain()
        await publisher.stop()
        for c in (limiter, cache, router):
            await c.close()

    return GrpcService(
        name="ingress",
        servicers=[(GatewayServicer(core), gateway_pb2_grpc.add_GatewayServicer_to_server, SERVICE_NAME)],
        ready=ready,
        on_stop=on_stop,
    )
