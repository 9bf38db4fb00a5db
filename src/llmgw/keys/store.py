"""Where keys live: a Redis store that ``llmgw keys`` writes and the ingresses follow, and a
read-only YAML file for setups that keep keys in Git (digests only, never secrets).

Redis layout (one hash tag, so it works on Redis Cluster and every write is one transaction):
``<prefix>:{keys}:key:<id>`` a key's record (JSON), ``:ids`` the set of ids, ``:tenant:<name>`` a
tenant's record, ``:tenants`` their names, ``:version`` bumped by every write. An ingress polls
the version (one GET) and reloads everything when it moves.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from llmgw.keys.model import Budget, KeyLimit, KeyRecord, Scopes, Secret, TenantRecord, digest, new_key_id, new_secret
from llmgw.kit.errors import ConfigError, NotFound
from llmgw.kit.redis import Client
from llmgw.kit.settings import load_yaml

__all__ = ["KeyData", "RedisKeyStore", "load_key_file"]


@dataclass(frozen=True, slots=True)
class KeyData:
    keys: tuple[KeyRecord, ...] = ()
    tenants: tuple[TenantRecord, ...] = ()

    def merged(self, other: KeyData) -> KeyData:
        return KeyData(self.keys + other.keys, self.tenants + other.tenants)


class RedisKeyStore:
    def __init__(self, redis: Client, prefix: str = "llmgw:keys") -> None:
        self._redis = redis
        self._p = f"{prefix}:{{keys}}"

    def _key(self, key_id: str) -> str:
        return f"{self._p}:key:{key_id}"

    def _tenant(self, tenant: str) -> str:
        return f"{self._p}:tenant:{tenant}"

    async def version(self) -> int:
        return int(await self._redis.get(f"{self._p}:version") or 0)

    async def put(self, record: KeyRecord) -> None:
        await self._write(self._key(record.id), record.model_dump_json(), "ids", record.id)

    async def put_tenant(self, record: TenantRecord) -> None:
        await self._write(self._tenant(record.tenant), record.model_dump_json(), "tenants", record.tenant)

    async def _write(self, key: str, value: str, index: str, member: str) -> None:
        """The record, its index entry and a version bump, as one transaction."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(key, value)
            pipe.sadd(f"{self._p}:{index}", member)
            pipe.incr(f"{self._p}:version")
            await pipe.execute()

    async def get(self, key_id: str) -> KeyRecord:
        raw = await self._redis.get(self._key(key_id))
        if raw is None:
            raise NotFound(f"key {key_id!r}: no such key")
        return KeyRecord.model_validate_json(raw)

    async def get_tenant(self, tenant: str) -> TenantRecord:
        raw = await self._redis.get(self._tenant(tenant))
        return TenantRecord.model_validate_json(raw) if raw is not None else TenantRecord(tenant=tenant)

    async def load(self) -> tuple[int, KeyData]:
        """(the version read before the data, everything): a write between the two bumps the
        version again, so the follower reloads once more and never keeps a torn view."""
        version = await self.version()
        ids = sorted(_text(m) for m in await self._redis.smembers(f"{self._p}:ids"))
        names = sorted(_text(m) for m in await self._redis.smembers(f"{self._p}:tenants"))
        keys = await self._redis.mget([self._key(i) for i in ids]) if ids else []
        tenants = await self._redis.mget([self._tenant(n) for n in names]) if names else []
        return version, KeyData(
            tuple(KeyRecord.model_validate_json(raw) for raw in keys if raw is not None),
            tuple(TenantRecord.model_validate_json(raw) for raw in tenants if raw is not None),
        )

    # ---- the lifecycle (llmgw keys) ----

    async def create(self, *, tenant: str, name: str = "", scopes: Scopes | None = None,
                     budgets: Iterable[Budget] = (), expires_at: float | None = None,
                     limits: Iterable[KeyLimit] = (), now: float | None = None) -> tuple[KeyRecord, str]:
        """A new key and its secret: the only time the secret exists outside the caller."""
        secret = new_secret()
        record = KeyRecord(id=new_key_id(), tenant=tenant, name=name, created_at=time.time() if now is None else now,
                           expires_at=expires_at, secrets=(Secret(sha256=digest(secret)),),
                           scopes=scopes or Scopes(), budgets=tuple(budgets), limits=tuple(limits))
        await self.put(record)
        return record, secret

    async def revoke(self, key_id: str, *, now: float | None = None) -> KeyRecord:
        record = await self.get(key_id)
        revoked = record.model_copy(update={"status": "revoked", "revoked_at": time.time() if now is None else now})
        await self.put(revoked)
        return revoked

    async def rotate(self, key_id: str, *, grace_s: float, now: float | None = None) -> tuple[KeyRecord, str]:
        """A new secret for the same key (same id, scopes, budgets and limits); the secrets it had
        stay valid ``grace_s`` more, so callers can switch without an outage."""
        record = await self.get(key_id)
        if record.status != "active":
            raise NotFound(f"key {key_id!r} is revoked: create a new key")
        at = time.time() if now is None else now
        secret = new_secret()
        kept = tuple(s.model_copy(update={"not_after": min(s.not_after or at + grace_s, at + grace_s)})
                     for s in record.live_secrets(at))
        rotated = record.model_copy(update={"secrets": (Secret(sha256=digest(secret)), *kept)})
        await self.put(rotated)
        return rotated, secret

    async def update(self, key_id: str, *, scopes: Scopes | None = None,
                     budgets: tuple[Budget, ...] | None = None,
                     limits: tuple[KeyLimit, ...] | None = None) -> KeyRecord:
        """Replace what is given (None: keep)."""
        record = await self.get(key_id)
        given = {"scopes": scopes, "budgets": budgets, "limits": limits}
        changes = {name: value for name, value in given.items() if value is not None}
        updated = KeyRecord.model_validate({**record.model_dump(), **changes})
        await self.put(updated)
        return updated


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class _KeyFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    keys: tuple[KeyRecord, ...] = ()
    tenants: dict[str, tuple[Budget, ...]] = {}


def load_key_file(path: str | Path) -> KeyData:
    """The read-only source: ``keys:`` records as ``llmgw keys create --print`` writes them
    (digests only) and ``tenants: {name: [budgets]}``."""
    try:
        data = _KeyFile.model_validate(load_yaml(path) or {})
        tenants = tuple(TenantRecord(tenant=t, budgets=b) for t, b in data.tenants.items())
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{path}: {problems}") from exc
    ids = [k.id for k in data.keys]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"{path}: a key id is listed twice")
    return KeyData(data.keys, tenants)
