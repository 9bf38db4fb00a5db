"""Reload a config file without a restart; a bad new file is rejected and the old one kept."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

from prometheus_client import Counter

from llmgw.kit.errors import ConfigError
from llmgw.kit.logging import get_logger

__all__ = ["FileWatcher"]

T = TypeVar("T")
_log = get_logger(__name__)
RELOADS = Counter("llmgw_config_reloads_total", "Config reloads", ["file", "result"])


class FileWatcher(Generic[T]):
    def __init__(self, path: Path, parse: Callable[[Path], T], apply: Callable[[T], None]) -> None:
        self._path = path
        self._parse = parse
        self._apply = apply
        self._mtime = self._stat()

    def _stat(self) -> float:
        try:
            return self._path.stat().st_mtime
        except FileNotFoundError:
            return 0.0

    def poll(self) -> bool:
        """Apply the file if it changed since the last poll; True when a new config took effect."""
        mtime = self._stat()
        if mtime == self._mtime:
            return False
        self._mtime = mtime
        try:
            value = self._parse(self._path)
        except ConfigError as exc:
            RELOADS.labels(self._path.name, "rejected").inc()
            _log.error("config_rejected_keeping_old", file=str(self._path), error=exc.message)
            return False
        self._apply(value)
        RELOADS.labels(self._path.name, "applied").inc()
        _log.info("config_reloaded", file=str(self._path))
        return True

    async def run(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            self.poll()
