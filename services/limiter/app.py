"""Composition root of the limiter: settings -> Redis -> core -> gRPC service.

``start_core`` is also how the ingress runs the limiter in its own process (``COLOCATE``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from llmgw.kit.redis import connect
from llmgw.kit.reload import FileWatcher
from llmgw.kit.scripts import ScriptBatcher
from llmgw.kit.server import GrpcService
from llmgw.kit.tasks import in_background
from llmgw.limiter.v1 import limiter_pb2_grpc
from llmgw.services.limiter.core import RedisLimiter
from llmgw.services.limiter.rules import load_rules
from llmgw.services.limiter.server import SERVICE_NAME, LimiterServicer
from llmgw.services.limiter.settings import LimiterSettings

__all__ = ["build", "start_core"]


async def start_core(
    settings: LimiterSettings, batcher: ScriptBatcher | None = None
) -> tuple[RedisLimiter, Callable[[], Awaitable[None]]]:
    """The core with its Redis and its rules file followed (hot reload); returns it and its stop.
    ``batcher``: share another core's script pipeline on the same Redis (colocated ingress); its
    Redis then belongs to whoever made the batcher, and this stop leaves it open."""
    redis = batcher.redis if batcher is not None else connect(settings.redis_url, settings.redis_password)
    core = RedisLimiter(
        redis,
        load_rules(settings.limits_file),
        prefix=settings.key_prefix,
        timeout_s=settings.redis_timeout_s,
        replicas=settings.replicas,
        batcher=batcher,
        lease_max=settings.lease_max,
        lease_ttl_s=settings.lease_ttl_s,
    )
    watcher = FileWatcher(settings.limits_file, load_rules, core.replace_rules)
    stop_reload = in_background(watcher.run(settings.reload_interval_s), name="limits-reload")

    async def stop() -> None:
        await stop_reload()
        await core.close()
        if batcher is None:
            await redis.aclose()

    return core, stop


async def build(settings: LimiterSettings) -> GrpcService:
    core, stop = await start_core(settings)
    return GrpcService(
        name="limiter",
        servicers=[(LimiterServicer(core), limiter_pb2_grpc.add_LimiterServicer_to_server, SERVICE_NAME)],
        ready=core.ready,
        on_stop=stop,
    )
