"""``python -m llmgw.services.drift``: the Faust worker, with a gRPC health endpoint and metrics.

Health is NOT_SERVING until the embedding model is loaded and the worker holds its partitions.
"""

from __future__ import annotations

import sys

from llmgw.kit.embed import SentenceEmbedder
from llmgw.kit.errors import ConfigError
from llmgw.kit.logging import configure
from llmgw.kit.metrics import start_metrics_server
from llmgw.kit.server import GrpcService, RunningServer, start_server
from llmgw.kit.settings import load_settings
from llmgw.services.drift.app import create_app
from llmgw.services.drift.settings import DriftSettings


def main() -> None:
    try:
        settings = load_settings(DriftSettings)
    except ConfigError as exc:
        print(f"drift: {exc.message}", file=sys.stderr)
        sys.exit(2)
    configure(settings.log_level, service="drift")
    start_metrics_server(settings.metrics_port)
    embedder = SentenceEmbedder(settings.model_path)
    app = create_app(settings, embedder)

    async def ready() -> bool:
        try:
            return bool(app.consumer.assignment())
        except Exception:  # consumer not started yet
            return False

    servers: list[RunningServer] = []

    @app.task
    async def health() -> None:
        servers.append(
            await start_server(GrpcService(name="drift", servicers=[], ready=ready), host=settings.host,
                               port=settings.port)
        )

    @app.on_before_shutdown.connect
    async def stop_health(sender: object, **_: object) -> None:
        # NOT_SERVING first, then stop: the orchestrator stops routing before the worker leaves.
        for server in servers:
            await server.stop(grace=1.0)

    from faust.worker import Worker

    Worker(app, loglevel=settings.log_level.upper(), quiet=True).execute_from_commandline()


if __name__ == "__main__":
    main()
