"""The shared ``__main__`` of every gRPC service: settings, logging, build, serve, graceful stop."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from llmgw.kit import tracing
from llmgw.kit.errors import ConfigError
from llmgw.kit.logging import configure, get_logger
from llmgw.kit.server import GrpcService, serve_forever
from llmgw.kit.settings import ServiceSettings, load_settings

__all__ = ["run", "run_service"]

S = TypeVar("S", bound=ServiceSettings)
_log = get_logger(__name__)


def run(main: Coroutine[Any, Any, None]) -> None:
    """Run a service's main coroutine on uvloop when it is installed (faster socket I/O for the
    Redis and Kafka clients; grpc.aio supports it), else on the standard loop."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    uvloop.run(main)


def run_service(name: str, settings_cls: type[S], build: Callable[[S], Awaitable[GrpcService]]) -> None:
    async def _main() -> None:
        settings = load_settings(settings_cls)
        configure(settings.log_level, service=name)
        if tracing.setup(name):
            _log.info("tracing_on", service=name)
        service = await build(settings)
        try:
            await serve_forever(
                service,
                host=settings.host,
                port=settings.port,
                metrics_port=settings.metrics_port,
                grace=settings.shutdown_grace_s,
            )
        finally:
            tracing.shutdown()  # what is queued is exported before the process ends

    try:
        run(_main())
    except ConfigError as exc:
        # Fail fast with the setting or file named, not a traceback.
        print(f"{name}: {exc.message}", file=sys.stderr)
        sys.exit(2)
