"""Ingress settings (environment variables are the field names in upper case)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator

from llmgw.kit.settings import ServiceSettings
from llmgw.services.router.settings import DEFAULT_ROUTES


class IngressSettings(ServiceSettings):
    port: int = 50050
    # The OpenAI-compatible HTTP face (docs/api.md) on the same process and core; -1: off.
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8080, ge=-1)
    limiter_addr: str = "127.0.0.1:50061"
    cache_addr: str = "127.0.0.1:50062"
    router_addr: str = "127.0.0.1:50063"
    # Cores to run inside this process instead of calling their service: "limiter,cache" and/or
    # "router". A cache hit then costs the caller one gRPC hop, not two; with the router too, a
    # miss goes app -> ingress -> provider. Same Redis, keys, rules, routes and prompts as the
    # services (their settings are read with a prefix: LIMITER_REDIS_URL, CACHE_POLICY_FILE,
    # ROUTER_ROUTES_FILE, ...), so colocated and split replicas can serve side by side. A colocated
    # router shapes provider traffic through this ingress's limiter (core or service). See
    # docs/cache.md "Topologies".
    colocate: frozenset[Literal["limiter", "cache", "router"]] = frozenset()
    # How long a lookup through the cache service may take before the request goes on as a miss.
    cache_timeout_s: float = 0.25
    kafka_bootstrap: str = "127.0.0.1:9092"
    # On for Apache Kafka; off for the embedded Tansu broker (it refuses InitProducerId).
    kafka_idempotence: bool = False
    # Off only to measure the publisher's overhead (bench/events.py): events are then discarded.
    publish_events: bool = True
    event_queue_size: int = 10_000
    # Where events wait on disk while the broker is away or slow. Default: the same directory at
    # every start of the ingress on this port ($LLMGW_STATE_DIR or ~/.local/state/llmgw, then
    # spool/ingress-<port>), so a restart replays it; locked per process (a second process on the
    # same directory gets a fresh temporary one). In k8s an emptyDir survives container restarts.
    spool_dir: Path | None = None
    spool_max_bytes: int = 512 * 1024 * 1024
    # Write-ahead bound: events the broker has not acknowledged within this time go to the disk
    # spool at once, so a crash during a broker hang loses at most this interval (docs/events.md).
    events_ack_timeout_s: float = Field(default=0.15, gt=0, le=5)
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str = "PLAIN"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    # Bootstrap keys, "key=tenant,key2=tenant2" (the demo, tests, a first admin); from a k8s
    # Secret in production. Never logged. Keys as data live in the key store (docs/keys.md).
    api_keys: SecretStr = SecretStr("")
    # The key store and spend ledger (Redis; `llmgw keys` writes it): empty, keys come from
    # API_KEYS and KEYS_FILE only, and there are no budgets or spend counters.
    keys_redis_url: str = ""
    keys_redis_password: SecretStr | None = None
    keys_prefix: str = "llmgw:keys"
    spend_prefix: str = "llmgw:spend"
    # A read-only key file (digests only, for keys kept in Git), merged with the store.
    keys_file: Path | None = None
    # How often the store's version and the file are checked: a created, rotated or revoked key
    # takes effect within this (plus one load).
    keys_poll_s: float = Field(default=0.5, gt=0, le=2)
    # The price of a model missing from the router's pricing, USD per million tokens. Unset: a
    # budgeted request that could reach such a model is refused (never counted as free).
    unpriced_input_usd_per_mtok: float | None = Field(default=None, ge=0)
    unpriced_output_usd_per_mtok: float | None = Field(default=None, ge=0)
    # How long a budget reservation may wait on the ledger before the request is refused.
    spend_timeout_s: float = Field(default=0.5, gt=0)
    prompts_dir: Path = Path("prompts")
    # Per-tenant redaction of events (format in llmgw.kit.redact); secrets are always removed.
    redaction_file: Path | None = None
    # The live label store (Redis); empty: labels come from the files only.
    labels_redis_url: str = ""
    labels_redis_password: SecretStr | None = None
    # How often label moves are picked up (a promote/rollback takes effect within this).
    labels_poll_s: float = 1.0
    default_label: str = "production"
    # Estimated output tokens reserved when the request sets no max_tokens.
    default_max_tokens: int = 512
    # How long identical concurrent misses wait for the first one's answer before calling alone.
    single_flight_wait_s: float = 10.0
    # When the limiter service is unreachable: admit (and count the miss) rather than fail.
    limiter_fail_open: bool = True
    # A request's events and metrics are built this long after its reply, together with those
    # of the requests around it: done at once, that work competes with sending the reply. 0: on
    # the next loop turn. (Stores and settles that others wait for are never delayed.)
    bookkeeping_delay_s: float = Field(default=0.002, ge=0, le=1)
    # Recent distinct requests whose conversion, validation, label resolution and cache key are
    # remembered, so a repeat (what a cache answers) redoes none of it; requests over
    # memo_max_bytes (serialized) are never remembered. 0: off.
    memo_entries: int = Field(default=1024, ge=0)
    memo_max_bytes: int = Field(default=4096, ge=0)
    # The router's routes file (the same one): the ingress builds cache keys from what really runs
    # (the route's sampling defaults and targets). Empty: keys from the request and prompt only.
    routes_file: Path | None = DEFAULT_ROUTES
    # A request larger than this (serialized) is refused with INVALID_ARGUMENT before anything
    # else reads it, authentication included: its fields never reach an event, so one request
    # can't make an event the broker refuses (Kafka's default max message is 1 MiB).
    max_request_bytes: int = Field(default=256 * 1024, ge=1024)

    # What llm.requests is keyed by (so its partition): the drift segment's fields by default, so
    # every input of a segment reaches the one drift replica that owns its partition; use a subset
    # of the drift job's SEGMENT_BY (docs/deploy.md). "request_id": spread evenly, one drift replica only.
    request_events_key_by: str = "tenant,route,prompt,label"

    @field_validator("request_events_key_by")
    @classmethod
    def _key_fields(cls, value: str) -> str:
        fields = [f.strip() for f in value.split(",") if f.strip()]
        allowed = {"tenant", "route", "prompt", "label"}
        if fields != ["request_id"] and (not fields or not set(fields) <= allowed):
            raise ValueError(f"REQUEST_EVENTS_KEY_BY: 'request_id' or fields of {sorted(allowed)}, got {value!r}")
        return ",".join(fields)

    @field_validator("colocate", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        # From the environment it is one comma-separated string.
        if isinstance(value, str):
            return frozenset(part.strip() for part in value.split(",") if part.strip())
        return value
