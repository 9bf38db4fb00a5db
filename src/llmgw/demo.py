"""The short demo ``llmgw up --demo`` runs: what the gateway does, shown against live services."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import aiohttp
import grpc
from aiokafka import AIOKafkaConsumer

from llmgw.events import request_id_of
from llmgw.events.v1 import events_pb2
from llmgw.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from llmgw.kit.kafka import DRIFT_METRICS_TOPIC, DRIFT_TOPIC, REQUESTS_TOPIC, RESPONSES_TOPIC

__all__ = ["run_demo"]

DEMO_KEY = "demo-key"
LIMITED_KEY = "limited-key"


def _h(title: str) -> None:
    print(f"\n=== {title} ===", flush=True)


def _md(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


def _attempts(resp: gateway_pb2.CompleteResponse) -> str:
    return ", ".join(f"{a.provider}/{a.model}={a.status}" for a in resp.attempts) or "-"


async def _read(kafka: str, topic: str, keys: set[str], timeout_s: float) -> dict[str, bytes]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=kafka, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=f"demo-{uuid.uuid4().hex[:6]}")
    await consumer.start()
    found: dict[str, bytes] = {}
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and (not keys or not keys <= set(found)):
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for r in records:
                    k = request_id_of(topic, r.key, r.value)
                    if not keys or k in keys:
                        found[k] = r.value
            if not keys and found:
                break
    finally:
        await consumer.stop()
    return found


async def _read_until(kafka: str, topic: str, done: Callable[[dict[str, Any]], bool],
                      timeout_s: float) -> dict[str, dict[str, Any]]:
    """The latest JSON record per key, read until one satisfies ``done`` (or the timeout)."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=kafka, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=f"demo-{uuid.uuid4().hex[:6]}")
    await consumer.start()
    latest: dict[str, dict[str, Any]] = {}
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not any(done(r) for r in latest.values()):
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for r in records:
                    latest[r.key.decode() if r.key else ""] = json.loads(r.value)
    finally:
        await consumer.stop()
    return latest


WEATHER_TOOL: Any = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


async def _tool_call_after_fallback(http_addr: str, fake_url: str | None) -> list[str]:
    """An openai SDK app with a tool: OpenAI fails, Anthropic asks for the tool (translated back to
    an OpenAI tool call), the app answers, and the model finishes from the tool's result."""
    import openai

    _h("5d. a tool call, answered after a fallback (OpenAI down: Anthropic calls the app's tool)")
    if fake_url:
        async with aiohttp.ClientSession() as http:
            await http.post(f"{fake_url}/_control/openai", json={"fail_next": 2, "status": 503})
    client = openai.AsyncOpenAI(base_url=f"http://{http_addr}/v1", api_key=DEMO_KEY)
    try:
        messages: list[Any] = [{"role": "user", "content": "Lisbon"}]
        first = await client.chat.completions.create(model="default", messages=messages, tools=[WEATHER_TOOL])
        extension = (first.model_extra or {}).get("llmgw", {})
        call = (first.choices[0].message.tool_calls or [])[0]
        print(f"provider: {extension.get('provider')}  finish_reason: {first.choices[0].finish_reason}"
              f"\ntool call: {call.function.name}({call.function.arguments})")  # type: ignore[union-attr]
        messages += [first.choices[0].message.model_dump(exclude_none=True),
                     {"role": "tool", "tool_call_id": call.id, "content": "22 C, clear sky"}]
        final = await client.chat.completions.create(model="default", messages=messages, tools=[WEATHER_TOOL])
        print(f"answer:   {final.choices[0].message.content}")
        return [extension.get("request_id", ""), (final.model_extra or {}).get("llmgw", {}).get("request_id", "")]
    finally:
        await client.close()


async def _key_with_a_budget(gw: gateway_pb2_grpc.GatewayStub, keys_redis: str) -> list[str]:
    """A key created live with a dollar budget: a request whose worst case does not fit is
    refused before any provider call; one that fits is charged what it really cost; a revoked
    key is refused within a second."""
    from llmgw.keys.ledger import SpendLedger
    from llmgw.keys.model import NANO, Budget
    from llmgw.keys.store import RedisKeyStore
    from llmgw.kit.redis import connect

    _h("5a. a key made live (llmgw keys create) with a budget of $0.001 a day")
    redis = connect(keys_redis, None)
    ids: list[str] = []
    try:
        store = RedisKeyStore(redis)
        record, secret = await store.create(tenant="demo", name="demo-budget", budgets=(Budget(usd=0.001, per="day"),))
        print(f"created {record.id} (tenant demo, $0.001/day); its secret is shown once, and is never logged")
        await asyncio.sleep(0.8)  # every ingress picks it up within KEYS_POLL_S
        ask = gateway_pb2.Message(role="user", content="What does a budget guarantee?")
        for max_tokens in (4000, 200):
            req = gateway_pb2.CompleteRequest(messages=[ask], sampling=gateway_pb2.Sampling(max_tokens=max_tokens),
                                              cache_mode=gateway_pb2.CompleteRequest.BYPASS)
            try:
                call = gw.Complete(req, metadata=_md(secret), timeout=30)
                resp = await call
                ids.append(resp.request_id)
                print(f"max_tokens {max_tokens}: OK, cost ${resp.usage.cost_usd:.8f}")
            except grpc.aio.AioRpcError as exc:
                ids.append(dict(exc.trailing_metadata() or ()).get("x-request-id", ""))
                print(f"max_tokens {max_tokens}: {exc.code().name}: {exc.details()}")
        await asyncio.sleep(0.2)  # the charge is settled after the reply
        spent = await SpendLedger(redis).window_spend("demo", "key", record.id, "day")
        print(f"spent today by {record.id}: ${spent / NANO:.8f} (llmgw spend --key {record.id} --since <day>)")
        await store.revoke(record.id)
        await asyncio.sleep(0.8)
        try:
            await gw.Complete(gateway_pb2.CompleteRequest(messages=[ask]), metadata=_md(secret), timeout=30)
            print("after revoke: still accepted (unexpected)")
        except grpc.aio.AioRpcError as exc:
            print(f"after revoke: {exc.code().name}: {exc.details()}")
    finally:
        await redis.aclose()
    return [i for i in ids if i]


async def run_demo(address: str, *, kafka: str, fake_url: str | None, http_addr: str = "",
                   keys_redis: str = "") -> list[str]:
    """Runs the demo and returns the request ids it made (the e2e test checks them on Kafka)."""
    ids: list[str] = []
    async with grpc.aio.insecure_channel(address) as channel:
        gw = gateway_pb2_grpc.GatewayStub(channel)
        req = gateway_pb2.CompleteRequest(
            prompt="summarize",
            variables={"text": "Kafka keeps an ordered, replayable log of events for every consumer."},
        )

        _h("1. a completion (prompt 'summarize', label production)")
        r1 = await gw.Complete(req, metadata=_md(DEMO_KEY), timeout=30)
        ids.append(r1.request_id)
        print(f"text:     {r1.text}\nprovider: {r1.provider}/{r1.model}  version: {r1.prompt_version}"
              f"  cache_hit: {r1.cache_hit}\nusage:    {r1.usage.input_tokens} in, {r1.usage.output_tokens} out,"
              f" ${r1.usage.cost_usd:.8f}")

        _h("2. the same request again: answered from the cache")
        await asyncio.sleep(0.2)  # the cache store runs after the first reply was sent
        r2 = await gw.Complete(req, metadata=_md(DEMO_KEY), timeout=30)
        ids.append(r2.request_id)
        print(f"text:     {r2.text}\ncache_hit: {r2.cache_hit}")

        _h("3. a tenant over its limit (2 requests/minute): RESOURCE_EXHAUSTED with retry-after")
        bypass = gateway_pb2.CompleteRequest(
            messages=[gateway_pb2.Message(role="user", content="What is a token bucket?")],
            cache_mode=gateway_pb2.CompleteRequest.BYPASS,
        )
        for i in range(3):
            try:
                call = gw.Complete(bypass, metadata=_md(LIMITED_KEY), timeout=30)
                resp = await call
                ids.append(resp.request_id)
                remaining = dict(await call.trailing_metadata() or ()).get("x-ratelimit-remaining-limited-rpm")
                print(f"request {i + 1}: OK (remaining this minute: {remaining})")
            except grpc.aio.AioRpcError as exc:
                md = dict(exc.trailing_metadata() or ())
                print(f"request {i + 1}: {exc.code().name}: {exc.details()} (retry-after: {md.get('retry-after')}s)")

        _h("4. OpenAI fails (its retry too): fallback to Anthropic with the prompt's Anthropic variant")
        if fake_url:
            async with aiohttp.ClientSession() as http:
                await http.post(f"{fake_url}/_control/openai", json={"fail_next": 2, "status": 503})
        fb = gateway_pb2.CompleteRequest(
            prompt="summarize", variables={"text": "Fallback keeps the app up when one provider is down."},
        )
        r4 = await gw.Complete(fb, metadata=_md(DEMO_KEY), timeout=30)
        ids.append(r4.request_id)
        print(f"text:     {r4.text}\nprovider: {r4.provider}\nattempts: {_attempts(r4)}")

        _h("5. streaming")
        chunks = [c async for c in gw.StreamComplete(
            gateway_pb2.CompleteRequest(prompt="classify-ticket", variables={"ticket": "I was charged twice"}),
            metadata=_md(DEMO_KEY), timeout=30)]
        ids.append(chunks[-1].request_id)
        print(f"{len(chunks) - 1} chunks: {''.join(c.delta for c in chunks)!r}  (final: {chunks[-1].provider})")
        if keys_redis:
            ids += await _key_with_a_budget(gw, keys_redis)

    if http_addr:
        _h("5b. an unmodified openai SDK app over HTTP: base_url and api_key changed, nothing else")
        import openai

        client = openai.AsyncOpenAI(base_url=f"http://{http_addr}/v1", api_key=DEMO_KEY)
        try:
            reply = await client.chat.completions.create(
                model="default", messages=[{"role": "user", "content": "Hello from the openai SDK"}])
            print(f"text:     {reply.choices[0].message.content}\nmodel:    {reply.model}"
                  f"  finish_reason: {reply.choices[0].finish_reason}")
            ids.append((reply.model_extra or {}).get("llmgw", {}).get("request_id", ""))
        finally:
            await client.close()
        import anthropic

        _h("5c. an unmodified anthropic SDK app over HTTP, the same way")
        claude = anthropic.AsyncAnthropic(base_url=f"http://{http_addr}", api_key=DEMO_KEY)
        try:
            msg = await claude.messages.create(model="anthropic-first", max_tokens=256,
                                               messages=[{"role": "user", "content": "Hello from the anthropic SDK"}])
            block = msg.content[0]
            print(f"text:     {getattr(block, 'text', '')}\nmodel:    {msg.model}  stop_reason: {msg.stop_reason}")
            ids.append((msg.model_extra or {}).get("llmgw", {}).get("request_id", ""))
        finally:
            await claude.close()
        ids += await _tool_call_after_fallback(http_addr, fake_url)

    _h("6. the events on Kafka")
    wanted = set(ids)
    reqs = await _read(kafka, REQUESTS_TOPIC, wanted, 20)
    resps = await _read(kafka, RESPONSES_TOPIC, wanted, 20)
    print(f"llm.requests:  {len(reqs)} of {len(wanted)} requests")
    print(f"llm.responses: {len(resps)} of {len(wanted)} requests")
    for rid in ids[:2]:
        if rid in resps:
            ev = events_pb2.ResponseEvent.FromString(resps[rid])
            print(f"  {rid[:8]}… status={ev.status} cache_hit={ev.cache_hit} provider={ev.provider}"
                  f" latency={ev.latency_ms:.1f}ms")
    windows = await _read_until(kafka, DRIFT_METRICS_TOPIC, lambda rec: "detectors" in rec, 30)
    for key, rec in list(windows.items())[:2]:
        if "detectors" in rec:
            stats = ", ".join(f"{name}={d['value']:.3g} (threshold {d['upper']:.3g}, {d['state']})"
                              for name, d in rec["detectors"].items())
            print(f"llm.drift.metrics: segment={key} window={rec['window']['n']} inputs {stats}")
        else:
            print(f"llm.drift.metrics: segment={key} reference filling {rec['reference']['have']}"
                  f"/{rec['reference']['need']}")
    if not windows:
        print("llm.drift.metrics: no window closed yet")
    incidents = await _read(kafka, DRIFT_TOPIC, set(), 1)
    print(f"llm.drift: {len(incidents)} open incident(s) (a short demo has no drift; see docs/drift.md)")
    return ids
