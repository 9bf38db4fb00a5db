"""Composition root of the limiter: settings -> Redis -> core -> gRPC service."""

from __future__ import annotations

import asyncio
import contextlib

from llmgw.kit.redis import connect
from llmgw.kit.reload import FileWatcher
from llmgw.kit.server import GrpcService
from llmgw.limiter.v1 import limiter_pb2_grpc
from llmgw.services.limiter.core import RedisLimiter
from llmgw.services.limiter.rules import load_rules
from llmgw.services.limiter.server import SERVICE_NAME, LimiterServicer
from llmgw.services.limiter.settings import LimiterSettings

__all__ = ["build"]


async def build(settings: LimiterSettings) -> GrpcService:
    redis = connect(settings.redis_url, settings.redis_password)
    core = RedisLimiter(
        redis,
        load_rules(settings.limits_file),
        prefix=settings.key_prefix,
        timeout_s=settings.redis_timeout_s,
        replicas=settings.replicas,
    )
    watcher = FileWatcher(settings.limits_file, load_rules, core.replace_rules)
    reload_task = asyncio.get_running_loop().create_task(watcher.run(settings.reload_interval_s))

    async def on_stop() -> None:
        reload_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reload_task
        await redis.aclose()

    service = GrpcService(
        name="limiter",
        servicers=[(LimiterServicer(core), limiter_pb2_grpc.add_LimiterServicer_to_server, SERVICE_NAME)],
        ready=core.ready,
        on_stop=on_stop,
    )
    return service
