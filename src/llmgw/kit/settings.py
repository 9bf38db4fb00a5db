"""Typed settings from the environment (and a YAML file where a service has rules).

Every service declares one pydantic model; each field ``foo_bar`` is read from the variable
``FOO_BAR``. Values are validated strictly and a bad one fails the start with an error that names
the variable, so a typo never becomes a silent default. Secret fields (``SecretStr``) never print.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from llmgw.kit.errors import ConfigError

__all__ = ["ServiceSettings", "load_settings", "load_yaml"]

S = TypeVar("S", bound="ServiceSettings")


class ServiceSettings(BaseModel):
    """Settings every service has: the same port contract everywhere."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # gRPC port; 0 picks a free one (tests).
    port: int = 50051
    host: str = "127.0.0.1"
    # Prometheus endpoint; 0 disables it.
    metrics_port: int = 0
    log_level: str = "info"
    # Seconds in-flight RPCs get after SIGTERM before they are cancelled.
    shutdown_grace_s: float = 5.0


def load_settings(
    cls: type[S], environ: Mapping[str, str] | None = None, *, prefix: str = "", **overrides: Any
) -> S:
    """Build ``cls`` from ``environ`` (default: ``os.environ``); overrides win (tests, composition).

    ``prefix`` reads ``<PREFIX>FOO_BAR`` instead: a process hosting another service's core (the
    ingress with ``COLOCATE``) reads that core's settings as ``LIMITER_REDIS_URL`` and so on."""
    env = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    for name in cls.model_fields:
        var = prefix + name.upper()
        if var in env:
            raw[name] = env[var]
    raw.update(overrides)
    try:
        return cls.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{prefix}{str(err['loc'][0]).upper()}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid settings for {cls.__name__}: {problems}") from exc


def load_yaml(path: str | Path) -> Any:
    """Read a YAML config file, naming the file in any error."""
    p = Path(path)
    try:
        return yaml.safe_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"config file not found: {p}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: invalid YAML: {exc}") from exc
