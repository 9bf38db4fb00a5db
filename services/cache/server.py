"""gRPC adapter for the cache: proto -> core -> proto."""

from __future__ import annotations

import grpc

from llmgw.cache.v1 import cache_pb2, cache_pb2_grpc
from llmgw.convert import entry_from_pb, entry_to_pb, key_from_pb, key_to_pb
from llmgw.domain import CacheEntry, KeyMaterial, LookupResult
from llmgw.kit.client import GrpcClient, translate_rpc_errors
from llmgw.kit.errors import InvalidArgument
from llmgw.services.cache.core import RedisCache

__all__ = ["SERVICE_NAME", "CacheClient", "CacheServicer"]

SERVICE_NAME = cache_pb2.DESCRIPTOR.services_by_name["Cache"].full_name


def _entry(res: LookupResult) -> cache_pb2.Entry | None:
    return entry_to_pb(res.entry) if res.entry is not None else None


class CacheServicer(cache_pb2_grpc.CacheServicer):
    def __init__(self, core: RedisCache) -> None:
        self._core = core

    async def Lookup(
        self, request: cache_pb2.LookupRequest, context: grpc.aio.ServicerContext
    ) -> cache_pb2.LookupResponse:
        res = await self._core.lookup(key_from_pb(request.key), read=request.read)
        return cache_pb2.LookupResponse(hit=res.hit, key=res.key, cacheable=res.cacheable, entry=_entry(res),
                                        leader=res.leader, in_flight=res.in_flight, lock_token=res.lock_token,
                                        lock_ttl_ms=res.lock_ttl_ms, tier=res.tier, similarity=res.similarity,
                                        semantic=res.semantic)

    async def Wait(self, request: cache_pb2.WaitRequest, context: grpc.aio.ServicerContext) -> cache_pb2.WaitResponse:
        if request.timeout_ms <= 0:
            raise InvalidArgument("timeout_ms", "must be positive")
        res = await self._core.wait(key_from_pb(request.key), timeout_s=request.timeout_ms / 1000)
        return cache_pb2.WaitResponse(hit=res.hit, key=res.key, entry=_entry(res), leader=res.leader,
                                      lock_token=res.lock_token)

    async def Store(
        self, request: cache_pb2.StoreRequest, context: grpc.aio.ServicerContext
    ) -> cache_pb2.StoreResponse:
        stored = await self._core.store(request.key, entry_from_pb(request.entry), tenant=request.tenant,
                                        prompt=request.prompt, route=request.route, lock_token=request.lock_token,
                                        semantic=request.semantic)
        return cache_pb2.StoreResponse(stored=stored)

    async def Release(
        self, request: cache_pb2.ReleaseRequest, context: grpc.aio.ServicerContext
    ) -> cache_pb2.ReleaseResponse:
        await self._core.release(request.key, request.lock_token)
        return cache_pb2.ReleaseResponse()

    async def Stats(
        self, request: cache_pb2.StatsRequest, context: grpc.aio.ServicerContext
    ) -> cache_pb2.StatsResponse:
        s = await self._core.stats(request.tenant, request.prompt or None)
        return cache_pb2.StatsResponse(
            hits=int(s.get("hits", 0)),
            misses=int(s.get("misses", 0)),
            stores=int(s.get("stores", 0)),
            tokens_saved=int(s.get("tokens_saved", 0)),
            cost_saved_usd=s.get("cost_saved_usd", 0.0),
            semantic_hits=int(s.get("semantic_hits", 0)),
        )

    async def Invalidate(
        self, request: cache_pb2.InvalidateRequest, context: grpc.aio.ServicerContext
    ) -> cache_pb2.InvalidateResponse:
        if not (request.tenant or request.prompt):
            raise InvalidArgument("tenant", "give a tenant and/or a prompt (refusing to drop the whole cache)")
        deleted = await self._core.invalidate(tenant=request.tenant or None, prompt=request.prompt or None,
                                              version=request.version or None)
        return cache_pb2.InvalidateResponse(deleted=deleted)


class CacheClient(GrpcClient):
    """``CachePort`` over gRPC. Lookups are bounded tightly: a slow cache is a miss, not an outage."""

    peer = "cache"

    def __init__(self, address: str, *, timeout_s: float = 0.25) -> None:
        super().__init__(address, timeout_s=timeout_s)
        self._stub = cache_pb2_grpc.CacheStub(self.channel)

    def peek(self, key: KeyMaterial) -> LookupResult | None:
        return None  # no memory of the service's entries here: every lookup is a call

    async def lookup(self, key: KeyMaterial, *, read: bool = True) -> LookupResult:
        with translate_rpc_errors(self.peer):
            pb = await self._stub.Lookup(cache_pb2.LookupRequest(key=key_to_pb(key), read=read),
                                         timeout=self.timeout_s, metadata=self.metadata())
        return LookupResult(key=pb.key, hit=pb.hit, entry=entry_from_pb(pb.entry) if pb.hit else None,
                            cacheable=pb.cacheable, leader=pb.leader, in_flight=pb.in_flight,
                            lock_token=pb.lock_token, lock_ttl_ms=pb.lock_ttl_ms, tier=pb.tier,
                            similarity=pb.similarity, semantic=pb.semantic)

    async def wait(self, key: KeyMaterial, *, timeout_s: float) -> LookupResult:
        with translate_rpc_errors(self.peer):
            pb = await self._stub.Wait(cache_pb2.WaitRequest(key=key_to_pb(key), timeout_ms=int(timeout_s * 1000)),
                                       timeout=timeout_s + self.timeout_s, metadata=self.metadata())
        return LookupResult(key=pb.key, hit=pb.hit, entry=entry_from_pb(pb.entry) if pb.hit else None,
                            leader=pb.leader, lock_token=pb.lock_token, tier="exact" if pb.hit else "")

    async def store(self, key: str, entry: CacheEntry, *, tenant: str, prompt: str = "", route: str = "",
                    lock_token: str = "", semantic: str = "") -> bool:
        with translate_rpc_errors(self.peer):
            pb = await self._stub.Store(
                cache_pb2.StoreRequest(key=key, entry=entry_to_pb(entry), tenant=tenant, prompt=prompt, route=route,
                                       lock_token=lock_token, semantic=semantic),
                timeout=self.timeout_s * 4, metadata=self.metadata(),
            )
        return pb.stored

    async def release(self, key: str, lock_token: str = "") -> None:
        with translate_rpc_errors(self.peer):
            await self._stub.Release(cache_pb2.ReleaseRequest(key=key, lock_token=lock_token),
                                     timeout=self.timeout_s * 4, metadata=self.metadata())

    async def stats(self, tenant: str, prompt: str = "") -> cache_pb2.StatsResponse:
        with translate_rpc_errors(self.peer):
            return await self._stub.Stats(cache_pb2.StatsRequest(tenant=tenant, prompt=prompt),
                                          timeout=self.timeout_s * 4)

    async def invalidate(self, *, tenant: str = "", prompt: str = "", version: str = "") -> int:
        with translate_rpc_errors(self.peer):
            pb = await self._stub.Invalidate(
                cache_pb2.InvalidateRequest(tenant=tenant, prompt=prompt, version=version), timeout=60)
        return pb.deleted
