"""Cache settings (environment variables are the field names in upper case)."""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr

from llmgw.kit.settings import ServiceSettings


class CacheSettings(ServiceSettings):
    port: int = 50062
    redis_url: str = "redis://127.0.0.1:6379/0"
    # Kept out of REDIS_URL so it can come from a Secret; never logged.
    redis_password: SecretStr | None = None
    key_prefix: str = "llmgw:cache"
    # Per prompt/route policy (cacheable, TTL, max size); without it TTL_S and MAX_ENTRY_BYTES apply.
    policy_file: Path | None = None
    ttl_s: int = 3600
    # Entries larger than this (compressed) are not stored.
    max_entry_bytes: int = 256 * 1024
    # A lookup never waits longer than this on Redis; after it the request goes on as a miss.
    redis_timeout_s: float = 0.05
    # Unset temperature means the route default, which is 0 in the shipped routes.
    unset_temperature_is_deterministic: bool = True
    # Hot entries kept in process memory (0: off): a repeat is answered without a Redis round
    # trip. Never longer than NEAR_TTL_S nor the entry's Redis TTL; `llmgw cache invalidate`
    # reaches every near cache at once (Redis pub/sub). See docs/cache.md "Near cache".
    near_entries: int = 10_000
    # And at most about this many bytes of them (kept decompressed; the ingress pod has 512Mi).
    near_max_bytes: int = 64 * 1024 * 1024
    near_ttl_s: float = 30.0
    # Hits from the near cache reach the shared counters (Stats, `llmgw cache stats`) in one batch
    # this often, not one Redis call per hit; a stopping process flushes what it holds.
    near_stats_flush_s: float = 0.5
    # A single-flight leader that dies without storing or releasing blocks waiters at most this long.
    single_flight_lock_s: float = 30.0
