"""One way to open Redis for every service, chosen by the URL: a single server, a Redis Cluster or
a primary found through Sentinel. Short timeouts; the password from a Secret.

    redis://host:6379/0                          one server (rediss:// for TLS)
    redis+cluster://host1:6379,host2:6379        a Redis Cluster, from any of its nodes (rediss+cluster://)
    redis+sentinel://s1:26379,s2:26379/mymaster/0  the primary Sentinel names "mymaster" (rediss+sentinel://)

Every key a service's scripts touch in one call shares a hash tag (see docs/deploy.md, "Redis
Cluster"), so each script runs on one shard; ``kit.scripts.ScriptBatcher`` routes each call to the
shard that owns its keys.
"""

from __future__ import annotations

from typing import Any, TypeAlias
from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis
from pydantic import SecretStr
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.sentinel import Sentinel

__all__ = ["Client", "connect", "describe", "hash_tag", "is_cluster"]

# Either kind of client: both take the same single-key commands, pipelines and scripts.
Client: TypeAlias = aioredis.Redis | RedisCluster

# Short socket timeouts: a dead Redis must cost milliseconds, never seconds (callers add their own
# tighter per-operation budgets on top).
_OPTIONS: dict[str, Any] = {"socket_timeout": 1.0, "socket_connect_timeout": 0.5}

_SCHEMES = {"redis", "rediss", "redis+cluster", "rediss+cluster", "redis+sentinel", "rediss+sentinel", "unix"}


def _hosts(netloc: str, default_port: int) -> list[tuple[str, int]]:
    hosts = []
    for part in netloc.rsplit("@", 1)[-1].split(","):
        host, sep, port = part.strip().rpartition(":")
        if not sep:
            host, port = part.strip(), ""
        hosts.append((host or "127.0.0.1", int(port) if port else default_port))
    return hosts


def _auth(netloc: str, password: SecretStr | None) -> dict[str, Any]:
    user, secret = None, None
    if "@" in netloc:
        userinfo = netloc.rsplit("@", 1)[0]
        user, _, secret = userinfo.partition(":")
    out: dict[str, Any] = {}
    if user:
        out["username"] = unquote(user)
    if password is not None:  # the Secret wins over a password written in the URL
        out["password"] = password.get_secret_value()
    elif secret:
        out["password"] = unquote(secret)
    return out


def connect(url: str, password: SecretStr | None = None) -> Client:
    """A client for ``url`` (see the module doc); raises ``ValueError`` naming a bad URL."""
    parts = urlsplit(url)
    if parts.scheme not in _SCHEMES:
        raise ValueError(f"redis url {describe(url)!r}: scheme must be one of {sorted(_SCHEMES)}")
    tls = parts.scheme.startswith("rediss")
    if parts.scheme.endswith("+cluster"):
        nodes = [ClusterNode(host, port) for host, port in _hosts(parts.netloc, 6379)]
        # Topology is refreshed on MOVED/ASK by the client and by the script batcher alike.
        return RedisCluster(startup_nodes=nodes, ssl=tls, **_auth(parts.netloc, password), **_OPTIONS)
    if parts.scheme.endswith("+sentinel"):
        path = [p for p in parts.path.split("/") if p]
        if not path:
            raise ValueError(f"redis url {describe(url)!r}: name the Sentinel service, e.g. /mymaster")
        sentinel = Sentinel(_hosts(parts.netloc, 26379), sentinel_kwargs=dict(_OPTIONS))
        # The pool asks Sentinel for the primary on every new connection: after a failover the
        # broken connections are replaced by connections to the promoted replica.
        primary = sentinel.master_for(path[0], redis_class=_SentinelPrimary, db=int(path[1]) if len(path) > 1 else 0,
                                      ssl=tls, **_auth(parts.netloc, password), **_OPTIONS)
        assert isinstance(primary, _SentinelPrimary)
        primary.sentinels = sentinel
        return primary
    return aioredis.Redis.from_url(
        url,
        password=password.get_secret_value() if password else None,
        health_check_interval=10,
        **_OPTIONS,
    )


class _SentinelPrimary(aioredis.Redis):
    """The primary's client; closing it closes the connections to the Sentinels too."""

    sentinels: Sentinel | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        for client in self.sentinels.sentinels if self.sentinels is not None else ():
            await client.aclose()


def is_cluster(client: Client) -> bool:
    return isinstance(client, RedisCluster)


def hash_tag(text: str) -> str:
    """``{text}`` with braces escaped: the part of a key Redis Cluster hashes to pick its slot."""
    return "{" + text.replace("{", "%7B").replace("}", "%7D") + "}"


def describe(url: str) -> str:
    """The URL with any password masked, for logs and errors."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    userinfo, hosts = parts.netloc.rsplit("@", 1)
    user = userinfo.split(":", 1)[0]
    return parts._replace(netloc=f"{user}:***@{hosts}" if ":" in userinfo else f"{user}@{hosts}").geturl()
