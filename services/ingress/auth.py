"""API key -> tenant. Keys are held only as SHA-256 digests, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac

from llmgw.kit.errors import ConfigError, Unauthenticated

__all__ = ["ApiKeys"]


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


class ApiKeys:
    def __init__(self, keys: dict[str, str]) -> None:
        self._by_digest = {_digest(k): tenant for k, tenant in keys.items()}

    @classmethod
    def parse(cls, spec: str) -> ApiKeys:
        """``key=tenant,key2=tenant2``."""
        keys: dict[str, str] = {}
        for item in filter(None, (part.strip() for part in spec.split(","))):
            key, sep, tenant = item.partition("=")
            if not sep or not key or not tenant:
                raise ConfigError("API_KEYS: expected 'key=tenant' pairs separated by commas")
            keys[key] = tenant
        return cls(keys)

    def tenant_for(self, header: str | None) -> str:
        """The tenant of an ``authorization`` header value (``Bearer <api key>``)."""
        if not header or not header.startswith("Bearer "):
            raise Unauthenticated("missing 'authorization: Bearer <api key>' metadata")
        probe = _digest(header[len("Bearer ") :].strip())
        for digest, tenant in self._by_digest.items():
            if hmac.compare_digest(digest, probe):
                return tenant
        raise Unauthenticated("unknown API key")
