"""API key -> tenant. Keys are held only as SHA-256 digests, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac

from llmgw.kit.errors import ConfigError, Unauthenticated

__all__ = ["ApiKeys"]


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


def _id(digest: bytes) -> str:
    """A key's id: a prefix of its digest, never the key. Limit rules match on it (api_key)."""
    return "key-" + digest.hex()[:12]


class ApiKeys:
    def __init__(self, keys: dict[str, str]) -> None:
        self._by_digest = {_digest(k): tenant for k, tenant in keys.items()}
        self._ids = {d: _id(d) for d in self._by_digest}

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
        return self.identify(header)[0]

    def identify(self, header: str | None) -> tuple[str, str]:
        """(tenant, key id) of an ``authorization`` header value (``Bearer <api key>``)."""
        if not header or not header.startswith("Bearer "):
            raise Unauthenticated("missing 'authorization: Bearer <api key>' metadata")
        probe = _digest(header[len("Bearer ") :].strip())
        for digest, tenant in self._by_digest.items():
            if hmac.compare_digest(digest, probe):
                return tenant, self._ids[digest]
        raise Unauthenticated("unknown API key")

    @staticmethod
    def key_id(key: str) -> str:
        """The id a key's requests carry (``api_key`` in limit rules): ``llmgw keys`` prints it."""
        return _id(_digest(key))
