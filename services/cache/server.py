"""gRPC adapter for the cache: proto -> core -> proto."""

from __future__ import annotations

import grpc
from llmgw.services.cache.core import RedisCache

from llmgw.cache.v1 import cache_pb2, cache_pb2_grpc
from llmgw.convert import entry_from_pb, entry_to_pb, key_from_pb, key_to_pb
from llmgw.domain import CacheEntry, KeyMaterial, LookupResult
from llmgw.kit.client import GrpcClient, translate_rpc_errors

__all__ = ["SERVICE_NAME", "CacheClient", "CacheServicer"]

SERVICE_NAME = cache_pb2.DESCRIPTOR.services_by_name["Cache"].full_name


class CacheServicer(cache_pb2_grpc.CacheServicer):
    def __init__(self, core: RedisCache) -> None:
        self._core = core

    async def Lookup(
        self, request: cache_pb2.LookupRequest, context: grpc.aio.ServicerContext
    ) -> cache_pb2.LookupResponse:
        res = await self._core.lookup(key_from_pb(request.key), read=request.read)
        out = cache_pb2.LookupResponse(hit=res.hit, key=res.key, cacheable=res.cacheable)
        if res.entry is not None:
            out.entry.CopyFrom(entry_to_pb(res.entry))
        return out

    async def Store(
        self, request: cache_pb2.StoreRequest, context: grpc.aio.ServicerContext
    ) -> cache_pb2.StoreResponse:
        stored = await self._core.store(
            request.key, entry_from_pb(request.entry), tenant=request.tenant, prompt=request.prompt
        )
        return cache_pb2.StoreResponse(stored=stored)

    async def Stats(
        self, request: cache_pb2.StatsRequest, context: grpc.aio.ServicerContext
    ) -> cache_pb2.StatsResponse:
        s = await self._core.stats(request.tenant)
        return cache_pb2.StatsResponse(
            hits=int(s.get("hits", 0)),
            misses=int(s.get("misses", 0)),
            stores=int(s.get("stores", 0)),
            tokens_saved=int(s.get("tokens_saved", 0)),
            cost_saved_usd=s.get("cost_saved_usd", 0.0),
        )


class CacheClient(GrpcClient):
    """``CachePort`` over gRPC. Lookups are bounded tightly: a slow cache is a miss, not an outage."""

    peer = "cache"

    def __init__(self, address: str, *, timeout_s: float = 0.25) -> None:
        super().__init__(address, timeout_s=timeout_s)
        self._stub = cache_pb2_grpc.CacheStub(self.channel)

    async def lookup(self, key: KeyMaterial, *, read: bool = True) -> LookupResult:
        with translate_rpc_errors(self.peer):
            pb = await self._stub.Lookup(
                cache_pb2.LookupRequest(key=key_to_pb(key), read=read),
                timeout=self.timeout_s,
                metadata=self.metadata(),
            )
        return LookupResult(
            key=pb.key,
            hit=pb.hit,
            entry=entry_from_pb(pb.entry) if pb.hit else None,
            cacheable=pb.cacheable,
        )

    async def store(self, key: str, entry: CacheEntry, *, tenant: str, prompt: str = "") -> bool:
        with translate_rpc_errors(self.peer):
            pb = await self._stub.Store(
                cache_pb2.StoreRequest(key=key, entry=entry_to_pb(entry), tenant=tenant, prompt=prompt),
                timeout=self.timeout_s * 4,
                metadata=self.metadata(),
            )
        return pb.stored

    async def stats(self, tenant: str) -> cache_pb2.StatsResponse:
        with translate_rpc_errors(self.peer):
            return await self._stub.Stats(cache_pb2.StatsRequest(tenant=tenant), timeout=self.timeout_s * 4)
