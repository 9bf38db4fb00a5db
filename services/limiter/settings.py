"""Limiter settings (environment variables are the field names in upper case)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr

from llmgw.kit.settings import ServiceSettings

DEFAULT_RULES = Path(__file__).with_name("limits.yaml")


class LimiterSettings(ServiceSettings):
    port: int = 50061
    redis_url: str = "redis://127.0.0.1:6379/0"
    # Kept out of REDIS_URL so it can come from a Secret; never logged.
    redis_password: SecretStr | None = None
    # Rules file (YAML); reloaded when it changes, a bad new file is rejected and the old one kept.
    limits_file: Path = DEFAULT_RULES
    key_prefix: str = "llmgw:rl"
    # A check never waits longer than this on Redis, then fails open (or closed).
    redis_timeout_s: float = 0.05
    # Replicas of this service: while Redis is out each applies limit / REPLICAS locally.
    replicas: int = 1
    reload_interval_s: float = 2.0
    # Cache hits admitted by a colocated core (the ingress with COLOCATE) may take a lease of up to
    # this many requests per Redis call and admit the next hits in process (1: every hit asks
    # Redis). Leased requests are charged first, so limits are never exceeded; see docs/limits.md.
    lease_max: int = 8
    lease_ttl_s: float = 1.0
    # The key store (docs/keys.md): keys' own rate limits become rules on their id, followed
    # live. Empty: the rules file only.
    keys_redis_url: str = ""
    keys_redis_password: SecretStr | None = None
    keys_prefix: str = "llmgw:keys"
    keys_poll_s: float = Field(default=0.5, gt=0, le=2)
