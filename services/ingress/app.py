"""Composition root of the ingress: settings -> peers (gRPC clients, or colocated cores) + publisher
-> core -> gRPC."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from pydantic import SecretStr
from redis.exceptions import RedisError

from llmgw.gateway.v1 import gateway_pb2_grpc
from llmgw.keys.ledger import SpendLedger
from llmgw.keys.ring import KeyFollower, parse_bootstrap
from llmgw.keys.store import RedisKeyStore
from llmgw.kit import tokens
from llmgw.kit.client import GrpcClient
from llmgw.kit.health import peer_serving
from llmgw.kit.kafka import DiscardingSink, KafkaPublisher, KafkaSecurity
from llmgw.kit.logging import get_logger
from llmgw.kit.redact import Redactor, load_redaction
from llmgw.kit.redis import connect
from llmgw.kit.scripts import ScriptBatcher
from llmgw.kit.server import GrpcService
from llmgw.kit.settings import load_settings
from llmgw.kit.spool import default_spool_dir
from llmgw.kit.tasks import in_background
from llmgw.ports import CachePort, EventSink, LimiterPort, RouterPort
from llmgw.prompts import LabelStore, Registry
from llmgw.services.cache.app import start_core as start_cache_core
from llmgw.services.cache.server import CacheClient
from llmgw.services.cache.settings import CacheSettings
from llmgw.services.ingress.anthropic_http import add_anthropic_routes
from llmgw.services.ingress.core import Gateway
from llmgw.services.ingress.http import OPENAPI, HttpFace
from llmgw.services.ingress.openai_http import add_openai_routes
from llmgw.services.ingress.server import SERVICE_NAME, GatewayServicer
from llmgw.services.ingress.settings import IngressSettings
from llmgw.services.ingress.spend import SpendGuard
from llmgw.services.limiter.app import start_core as start_limiter_core
from llmgw.services.limiter.server import LimiterClient
from llmgw.services.limiter.settings import LimiterSettings
from llmgw.services.router.client import RouterClient
from llmgw.services.router.config import Price, RouterConfig, load_router_config
from llmgw.services.router.settings import RouterSettings

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


async def _keys(settings: IngressSettings, routes: RouterConfig | None) -> tuple[KeyFollower, SpendGuard, Stop]:
    """The key ring (bootstrap keys, the key file, the store; followed live) and the spend
    guard on the same Redis; returns their stop."""
    redis = connect(settings.keys_redis_url, settings.keys_redis_password) if settings.keys_redis_url else None
    follower = KeyFollower(
        bootstrap=parse_bootstrap(settings.api_keys.get_secret_value()),
        store=RedisKeyStore(redis, settings.keys_prefix) if redis is not None else None,
        key_file=settings.keys_file, poll_s=settings.keys_poll_s,
    )
    await follower.start()
    unpriced = None
    if settings.unpriced_input_usd_per_mtok is not None or settings.unpriced_output_usd_per_mtok is not None:
        unpriced = Price(input=settings.unpriced_input_usd_per_mtok or 0.0,
                         output=settings.unpriced_output_usd_per_mtok or 0.0)
    ledger = SpendLedger(redis, prefix=settings.spend_prefix) if redis is not None else None
    guard = SpendGuard(ledger, routes, unpriced=unpriced, timeout_s=settings.spend_timeout_s)
    stop_follow = in_background(follower.run(), name="keys")

    async def stop() -> None:
        await stop_follow()
        if redis is not None:
            await redis.aclose()

    return follower, guard, stop


Stop = Callable[[], Awaitable[None]]


class _Core(Protocol):
    async def ready(self) -> bool: ...


C = TypeVar("C", bound=_Core)
G = TypeVar("G", bound=GrpcClient)


@dataclass
class _Peers:
    """How to probe and close the limiter and cache the core talks to."""

    probes: list[Callable[[], Awaitable[bool]]] = field(default_factory=list)
    stops: list[Stop] = field(default_factory=list)

    def local(self, started: tuple[C, Stop]) -> C:
        """A core running in this process: ready when its Redis is."""
        core, stop = started
        self.probes.append(core.ready)
        self.stops.append(stop)
        return core

    def remote(self, client: G) -> G:
        """A service called over gRPC: ready when it says it is SERVING."""
        self.probes.append(lambda: peer_serving(client.channel))
        self.stops.append(client.close)
        return client


async def _peers(settings: IngressSettings, limiter_settings: LimiterSettings | None,
                 cache_settings: CacheSettings | None) -> tuple[LimiterPort, CachePort, _Peers]:
    peers = _Peers()
    # A colocated core's settings: handed in (tests, composition) or read with its prefix.
    lim_s = (limiter_settings or load_settings(LimiterSettings, prefix="LIMITER_")) \
        if "limiter" in settings.colocate else None
    cache_s = (cache_settings or load_settings(CacheSettings, prefix="CACHE_")) \
        if "cache" in settings.colocate else None
    shared: ScriptBatcher | None = None
    if lim_s is not None and cache_s is not None and _same_redis(lim_s, cache_s):
        # The check and the lookup a request makes at once leave in one write, come back in one read.
        shared = ScriptBatcher(connect(lim_s.redis_url, lim_s.redis_password))
    limiter: LimiterPort
    cache: CachePort
    if lim_s is not None:
        limiter = peers.local(await start_limiter_core(lim_s, shared))
    else:
        limiter = peers.remote(LimiterClient(settings.limiter_addr))
    if cache_s is not None:
        cache = peers.local(await start_cache_core(cache_s, shared))
    else:
        cache = peers.remote(CacheClient(settings.cache_addr, timeout_s=settings.cache_timeout_s))
    if shared is not None:
        peers.stops.append(shared.redis.aclose)  # after both cores stopped: they share it, this owns it
    return limiter, cache, peers


def _same_redis(a: LimiterSettings, b: CacheSettings) -> bool:
    def secret(s: SecretStr | None) -> str | None:
        return s.get_secret_value() if s else None

    return a.redis_url == b.redis_url and secret(a.redis_password) == secret(b.redis_password)


def _router(settings: IngressSettings, peers: _Peers, registry: Registry, limiter: LimiterPort,
            router_settings: RouterSettings | None) -> RouterPort:
    if "router" not in settings.colocate:
        return peers.remote(RouterClient(settings.router_addr))
    # Imported here: the core brings the provider SDKs, seconds of import a split ingress never needs.
    from llmgw.services.router.app import build_core

    core, closers = build_core(router_settings or load_settings(RouterSettings, prefix="ROUTER_"),
                               registry=registry, shaper=limiter)

    async def stop() -> None:
        for c in closers:
            await c.close()

    peers.stops.append(stop)
    return core


async def build(settings: IngressSettings, *, limiter_settings: LimiterSettings | None = None,
                cache_settings: CacheSettings | None = None,
                router_settings: RouterSettings | None = None) -> GrpcService:
    """``limiter_settings``/``cache_settings``/``router_settings`` configure colocated cores
    (default: read from the environment with the ``LIMITER_``/``CACHE_``/``ROUTER_`` prefix)."""
    limiter, cache, peers = await _peers(settings, limiter_settings, cache_settings)
    registry = Registry.load(settings.prompts_dir)
    tokens.warm_up()  # every miss counts its prompt: not on the first request's time
    router = _router(settings, peers, registry, limiter, router_settings)
    security = KafkaSecurity(
        protocol=settings.kafka_security_protocol,
        sasl_mechanism=settings.kafka_sasl_mechanism,
        username=settings.kafka_sasl_username,
        password=settings.kafka_sasl_password.get_secret_value() if settings.kafka_sasl_password else None,
    )
    publisher = KafkaPublisher(
        settings.kafka_bootstrap, queue_size=settings.event_queue_size, idempotent=settings.kafka_idempotence,
        security=security,
        spool_dir=settings.spool_dir or default_spool_dir("ingress", settings.port),
        spool_max_bytes=settings.spool_max_bytes, ack_timeout_s=settings.events_ack_timeout_s,
    )
    await publisher.start()
    events: EventSink = publisher if settings.publish_events else DiscardingSink()
    stop_labels = await _follow_labels(settings, registry)
    routes = load_router_config(settings.routes_file) if settings.routes_file else None
    follower, spend, stop_keys = await _keys(settings, routes)
    core = Gateway(
        limiter=limiter,
        cache=cache,
        router=router,
        events=events,
        registry=registry,
        keys=lambda: follower.current,
        spend=spend,
        redactor=Redactor(load_redaction(settings.redaction_file)),
        default_label=settings.default_label,
        default_max_tokens=settings.default_max_tokens,
        limiter_fail_open=settings.limiter_fail_open,
        single_flight_wait_s=settings.single_flight_wait_s,
        memo_entries=settings.memo_entries,
        bookkeeping_delay_s=settings.bookkeeping_delay_s,
        routes=routes,
        events_key_by=settings.request_events_key_by.split(","),
    )

    async def ready() -> bool:
        # The gateway needs its peers (or colocated cores' Redis); Kafka is not required (events
        # wait in the queue).
        checks = await asyncio.gather(*(probe() for probe in peers.probes))
        return all(checks)

    face: HttpFace | None = None
    endpoints: dict[str, str] = {}
    if settings.http_port >= 0:
        face = HttpFace(max_request_bytes=settings.max_request_bytes)
        add_openai_routes(face, core, routes, max_request_bytes=settings.max_request_bytes)
        add_anthropic_routes(face, core, routes, max_request_bytes=settings.max_request_bytes)
        face.serve_document("/openapi.json", OPENAPI)
        endpoints["http"] = await face.start(settings.http_host, settings.http_port)
        _log.info("http_serving", address=endpoints["http"])

    async def on_stop() -> None:
        if face is not None:
            await face.stop()
        await stop_labels()
        await core.drain()
        await stop_keys()
        await publisher.stop()
        for stop in peers.stops:
            await stop()

    return GrpcService(
        name="ingress",
        servicers=[(GatewayServicer(core, memo_entries=settings.memo_entries, memo_max_bytes=settings.memo_max_bytes,
                                    max_request_bytes=settings.max_request_bytes),
                    gateway_pb2_grpc.add_GatewayServicer_to_server, SERVICE_NAME)],
        ready=ready,
        on_stop=on_stop,
        endpoints=endpoints,
    )
