"""The keys an ingress accepts, as it holds them in memory, and how it keeps them current.

A ``KeyRing`` is immutable: a change in the store builds a new ring and swaps it in whole, so a
request sees one consistent set. ``KeyFollower`` polls the store's version (one GET, by default
every 0.5 s) and the key file's mtime, so a created, rotated or revoked key takes effect in every
running ingress within a second, without a restart.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import Counter, Gauge
from redis.exceptions import RedisError

from llmgw.keys.model import Budget, KeyRecord, Scopes, Secret, TenantRecord
from llmgw.keys.store import KeyData, RedisKeyStore, load_key_file
from llmgw.kit.errors import ConfigError, Unauthenticated
from llmgw.kit.logging import get_logger
from llmgw.kit.reload import FileWatcher

__all__ = ["Identity", "KeyFollower", "KeyRing", "bootstrap_id", "parse_bootstrap"]

_log = get_logger(__name__)
RELOADS = Counter("llmgw_keys_reloads_total", "Key ring rebuilds", ["result"])
KEYS = Gauge("llmgw_keys", "Keys the ingress accepts (active, not expired)")


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a request is: never the secret, nor its digest."""

    tenant: str
    key_id: str
    scopes: Scopes = Scopes()
    # ("key" | "tenant", budget): every budget a request of this key is charged against.
    budgets: tuple[tuple[str, Budget], ...] = ()


def bootstrap_id(secret: str) -> str:
    """The id of a key given in ``API_KEYS`` (a prefix of its digest): stable across restarts,
    so limit rules can name it."""
    return "key-" + hashlib.sha256(secret.encode("utf-8")).hexdigest()[:12]


def parse_bootstrap(spec: str) -> dict[str, str]:
    """``key=tenant,key2=tenant2`` (``API_KEYS``) -> {secret: tenant}."""
    keys: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        key, sep, tenant = item.partition("=")
        if not sep or not key or not tenant:
            raise ConfigError("API_KEYS: expected 'key=tenant' pairs separated by commas")
        keys[key] = tenant
    return keys


class KeyRing:
    def __init__(self, data: KeyData = KeyData(), *, bootstrap: Mapping[str, str] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        tenants: dict[str, TenantRecord] = {t.tenant: t for t in data.tenants}
        self._tenant_budgets = {name: t.budgets for name, t in tenants.items()}
        records = list(data.keys)
        for secret, tenant in (bootstrap or {}).items():
            records.append(KeyRecord(id=bootstrap_id(secret), tenant=tenant, name="API_KEYS",
                                     secrets=(Secret(sha256=hashlib.sha256(secret.encode()).hexdigest()),)))
        self._by_digest: dict[bytes, tuple[KeyRecord, Secret]] = {}
        self._identities: dict[str, Identity] = {}
        for record in records:
            for s in record.secrets:
                self._by_digest[bytes.fromhex(s.sha256)] = (record, s)
            self._identities[record.id] = Identity(
                record.tenant, record.id, record.scopes,
                (*(("key", b) for b in record.budgets),
                 *(("tenant", b) for b in self._tenant_budgets.get(record.tenant, ()))))
        self.size = sum(1 for r in records if r.status == "active")

    def identify(self, header: str | None) -> Identity:
        """The identity of an ``authorization`` value (``Bearer <api key>``).

        One SHA-256 and a dict lookup: the lookup's timing can only tell an attacker about the
        digest of what they sent, never about a stored secret."""
        if not header or not header.startswith("Bearer "):
            raise Unauthenticated("missing 'authorization: Bearer <api key>' metadata")
        found = self._by_digest.get(hashlib.sha256(header[len("Bearer "):].strip().encode("utf-8")).digest())
        if found is None:
            raise Unauthenticated("unknown API key")
        record, secret = found
        now = self._clock()
        if record.status != "active":
            raise Unauthenticated(f"API key {record.id} is revoked")
        if record.expires_at is not None and record.expires_at <= now:
            raise Unauthenticated(f"API key {record.id} has expired")
        if secret.not_after is not None and secret.not_after <= now:
            raise Unauthenticated(f"this secret of API key {record.id} was rotated out; use the new one")
        return self._identities[record.id]

    def tenant_budgets(self, tenant: str) -> tuple[Budget, ...]:
        return self._tenant_budgets.get(tenant, ())


class KeyFollower:
    """Keeps ``current`` up to date with the store and the key file (either may be absent)."""

    def __init__(self, *, bootstrap: Mapping[str, str], store: RedisKeyStore | None = None,
                 key_file: Path | None = None, poll_s: float = 0.5,
                 on_change: Callable[[KeyData], None] | None = None) -> None:
        """``on_change``: also told every new set of keys (the limiter turns their own rate
        limits into rules)."""
        self._on_change = on_change
        self._bootstrap = dict(bootstrap)
        self._store = store
        self._file = key_file
        self._poll_s = poll_s
        self._version = -1
        self._watcher: FileWatcher[KeyData] | None = None
        self._store_data = KeyData()
        self._file_data = KeyData()
        self.current = KeyRing(bootstrap=self._bootstrap)

    async def start(self) -> None:
        """The first load: a bad key file is an error at start (never an ingress that accepts
        nothing); an unreachable store is logged, and the follower keeps trying."""
        if self._file is not None:
            self._file_data = load_key_file(self._file)
            self._watcher = FileWatcher(self._file, load_key_file, self._set_file_data)
        await self.poll()
        self._rebuild()

    async def poll(self) -> bool:
        changed = False
        if self._watcher is not None:
            changed |= self._watcher.poll()
        if self._store is not None:
            try:
                version = await self._store.version()
                if version != self._version:
                    self._version, self._store_data = await self._store.load()
                    changed = True
            except (RedisError, OSError, ValueError) as exc:
                RELOADS.labels("store_unreachable").inc()
                _log.warning("key_store_unreachable_keeping_keys", error=repr(exc))
        if changed:
            self._rebuild()
        return changed

    def _set_file_data(self, data: KeyData) -> None:
        self._file_data = data

    def _rebuild(self) -> None:
        data = self._file_data.merged(self._store_data)
        self.current = KeyRing(data, bootstrap=self._bootstrap)
        if self._on_change is not None:
            self._on_change(data)
        KEYS.set(self.current.size)
        RELOADS.labels("applied").inc()

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._poll_s)
            await self.poll()
