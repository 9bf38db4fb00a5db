"""API keys as data and dollar budgets (docs/keys.md), through real gRPC and HTTP servers, real
Redis and the real broker: the key lifecycle in a running ingress, scopes, budgets that never
overshoot across two replicas, partial streams charged, spend from events = the live counters."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import anthropic
import grpc
import openai
import pytest
import redis.asyncio as aioredis
import yaml

from llmgw.cli import main as cli
from llmgw.commands.keys import events_spend
from llmgw.events.v1 import events_pb2
from llmgw.gateway.v1 import gateway_pb2
from llmgw.keys.ledger import SpendLedger, utc_day
from llmgw.keys.model import NANO, Budget, KeyLimit, Scopes, digest
from llmgw.keys.store import RedisKeyStore
from llmgw.kit.kafka import REQUESTS_TOPIC, RESPONSES_TOPIC
from llmgw.kit.tokens import count_tokens
from llmgw.stack import Stack, start_stack
from tests.helpers import HIGH_LIMITS, Client, read_topic

pytestmark = pytest.mark.integration

# A reply of a known length: a request whose max_tokens is exactly its token count is charged
# exactly its worst case, so "how many requests fit a budget" has one right answer.
REPLY = "The quick brown fox jumps over the lazy dog and keeps running far away."
REPLY_TOKENS = count_tokens(REPLY)
OUT_PRICE = 1000.0  # USD per million output tokens: $0.001 a token
ROUTES = {
    "providers": {"openai": {"api_key_env": "OPENAI_API_KEY"}, "anthropic": {"api_key_env": "ANTHROPIC_API_KEY"}},
    "default_route": "default",
    "routes": {
        "default": {"defaults": {"temperature": 0, "max_tokens": 64},
                    "targets": [{"provider": "openai", "model": "gpt-4o-mini"}]},
        "fallback": {"targets": [{"provider": "openai", "model": "gpt-4o-mini"},
                                 {"provider": "anthropic", "model": "claude-3-5-haiku-latest"}]},
        # Output-only price: a request's cost is its output tokens, known in advance.
        "metered": {"defaults": {"temperature": 0}, "targets": [{"provider": "openai", "model": "metered-1"}]},
        "unpriced": {"targets": [{"provider": "openai", "model": "no-price-1"}]},
    },
    "pricing": {"gpt-4o-mini": {"input": 0.15, "output": 0.60}, "claude-3-5-haiku-latest": {"input": 0.8, "output": 4.0},
                "metered-1": {"input": 0.0, "output": OUT_PRICE}},
}


@pytest.fixture
async def keyed(redis_url: str, topics_ready: str, tmp_path: Path) -> AsyncIterator[Stack]:
    routes = tmp_path / "routes.yaml"
    routes.write_text(yaml.safe_dump(ROUTES))
    limits = tmp_path / "limits.yaml"
    limits.write_text(HIGH_LIMITS)
    prefix = f"llmgw-test-{uuid.uuid4().hex[:8]}"
    s = await start_stack(redis_url=redis_url, kafka_bootstrap=topics_ready, routes_file=routes, limits_file=limits,
                          prefix=prefix,
                          limiter_overrides={"keys_redis_url": redis_url, "keys_prefix": f"{prefix}:keys",
                                             "keys_poll_s": 0.25},
                          ingress_overrides={
                              "keys_redis_url": redis_url, "keys_prefix": f"{prefix}:keys",
                              "spend_prefix": f"{prefix}:spend", "keys_poll_s": 0.25})
    try:
        yield s
    finally:
        await s.stop()


def _store(redis: aioredis.Redis, s: Stack) -> RedisKeyStore:
    return RedisKeyStore(redis, f"{s.prefix}:keys")


def _ledger(redis: aioredis.Redis, s: Stack) -> SpendLedger:
    return SpendLedger(redis, prefix=f"{s.prefix}:spend")


def _msg(text: str, **kw: object) -> gateway_pb2.CompleteRequest:
    return gateway_pb2.CompleteRequest(messages=[gateway_pb2.Message(role="user", content=text)], **kw)  # type: ignore[arg-type]


async def _until(check: object, timeout_s: float = 2.0) -> float:
    """Seconds until ``check()`` (an async callable) is true; fails after ``timeout_s``."""
    start = time.monotonic()
    while True:
        if await check():  # type: ignore[operator]
            return time.monotonic() - start
        if time.monotonic() - start > timeout_s:
            pytest.fail(f"not within {timeout_s} s")
        await asyncio.sleep(0.05)


async def _status(client: Client, key: str, req: gateway_pb2.CompleteRequest | None = None) -> grpc.StatusCode:
    try:
        await client.complete(req or _msg("hi"), key=key)
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def test_created_key_works_and_revoked_key_is_refused_within_2s(
        keyed: Stack, redis: aioredis.Redis, capfd: pytest.CaptureFixture[str]) -> None:
    settings = keyed.ingress_settings
    assert settings is not None
    args = ["--redis-url", settings.keys_redis_url, "--prefix", f"{keyed.prefix}:keys"]
    assert await asyncio.to_thread(cli, ["keys", "create", "--tenant", "acme", "--name", "ci", *args]) == 0
    out = capfd.readouterr().out
    secret = next(line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("secret: "))
    key_id = re.search(r"created (key-\S+)", out).group(1)  # type: ignore[union-attr]
    client = Client(keyed.ingress.address)
    sdk = openai.AsyncOpenAI(base_url=f"{keyed.http}/v1", api_key=secret, max_retries=0)
    try:
        # Picked up by the running ingress without a restart.
        await _until(lambda: _is(_status(client, secret), grpc.StatusCode.OK))
        answer = await sdk.chat.completions.with_raw_response.create(
            model="default", messages=[{"role": "user", "content": "hi"}])
        rid = answer.headers["x-request-id"]
        assert answer.parse().choices[0].message.content
        assert await asyncio.to_thread(cli, ["keys", "revoke", key_id, *args]) == 0
        took = await _until(lambda: _is(_status(client, secret), grpc.StatusCode.UNAUTHENTICATED))
        assert took < 2.0
        with pytest.raises(openai.AuthenticationError) as refused:
            await sdk.chat.completions.create(model="default", messages=[{"role": "user", "content": "hi"}])
        assert "revoked" in str(refused.value)
        assert await asyncio.to_thread(cli, ["keys", "list", *args]) == 0
        assert await asyncio.to_thread(cli, ["keys", "show", key_id, *args]) == 0
    finally:
        await sdk.close()
        await client.close()
    # The events know the key by its id; the secret and its digest are nowhere: not in the
    # events, not in the logs, not in what the CLI printed after creating it.
    events = [*(await read_topic(settings.kafka_bootstrap, REQUESTS_TOPIC, [rid])).values(),
              *(await read_topic(settings.kafka_bootstrap, RESPONSES_TOPIC, [rid])).values()]
    assert len(events) == 2 and all(key_id.encode() in e for e in events)
    printed = capfd.readouterr()
    assert key_id in printed.out and "revoked" in printed.out
    for leak in (secret, digest(secret)):
        assert all(leak.encode() not in e for e in events)
        assert leak not in printed.out and leak not in printed.err


async def _is(status: object, want: grpc.StatusCode) -> bool:
    return await status == want  # type: ignore[misc]


async def test_rotate_keeps_both_secrets_in_the_grace_period(keyed: Stack, redis: aioredis.Redis) -> None:
    store = _store(redis, keyed)
    record, old = await store.create(tenant="acme")
    client = Client(keyed.ingress.address)
    try:
        await _until(lambda: _is(_status(client, old), grpc.StatusCode.OK))
        _, new = await store.rotate(record.id, grace_s=1.5)
        await _until(lambda: _is(_status(client, new), grpc.StatusCode.OK))
        assert await _status(client, old) == grpc.StatusCode.OK  # still inside the grace period
        await asyncio.sleep(1.6)
        assert await _status(client, old) == grpc.StatusCode.UNAUTHENTICATED
        assert await _status(client, new) == grpc.StatusCode.OK
    finally:
        await client.close()


async def test_an_expired_key_is_refused(keyed: Stack, redis: aioredis.Redis) -> None:
    _, secret = await _store(redis, keyed).create(tenant="acme", expires_at=time.time() + 1.0)
    client = Client(keyed.ingress.address)
    try:
        await _until(lambda: _is(_status(client, secret), grpc.StatusCode.OK), timeout_s=0.9)
        await asyncio.sleep(1.0)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await client.complete(_msg("hi"), key=secret)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED and "expired" in (refused.value.details() or "")
    finally:
        await client.close()


async def test_scopes_refuse_what_the_key_may_not_use_naming_it(keyed: Stack, redis: aioredis.Redis) -> None:
    store = _store(redis, keyed)
    _, by_route = await store.create(tenant="acme", scopes=Scopes(routes=("default",)))
    _, by_model = await store.create(tenant="acme", scopes=Scopes(models=("openai/gpt-4o-mini",)))
    _, by_prompt = await store.create(tenant="acme", scopes=Scopes(prompts=("summarize",)))
    client = Client(keyed.ingress.address)
    try:
        await _until(lambda: _is(_status(client, by_prompt, gateway_pb2.CompleteRequest(
            prompt="summarize", variables={"text": "a b c"})), grpc.StatusCode.OK))
        cases = [
            (by_route, _msg("hi", route="fallback"), "route 'fallback'"),
            (by_route, _msg("hi", model="metered"), "route 'metered'"),
            # The fallback route may call claude: a key limited to gpt-4o-mini can't spend there.
            (by_model, _msg("hi", route="fallback"), "model 'anthropic/claude-3-5-haiku-latest'"),
            (by_prompt, _msg("hi"), "raw messages"),
        ]
        for key, req, named in cases:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await client.complete(req, key=key)
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert named in (refused.value.details() or "")
        # ...and what they may use still works.
        assert await _status(client, by_route, _msg("hi", route="default")) == grpc.StatusCode.OK
        assert await _status(client, by_model, _msg("hi")) == grpc.StatusCode.OK
        # GET /v1/models lists only what the key may use.
        lister = openai.AsyncOpenAI(base_url=f"{keyed.http}/v1", api_key=by_model, max_retries=0)
        try:
            listed = {m.id async for m in lister.models.list()}
        finally:
            await lister.close()
        assert {"default", "metered", "openai/gpt-4o-mini"} & listed == {"default", "openai/gpt-4o-mini"}
        assert "fallback" not in listed
        # The HTTP faces answer 403 naming it too.
        sdk = anthropic.AsyncAnthropic(base_url=keyed.http, api_key=by_model, max_retries=0)
        try:
            with pytest.raises(anthropic.PermissionDeniedError) as denied:
                await sdk.messages.create(model="fallback", max_tokens=16, messages=[{"role": "user", "content": "x"}])
            assert "claude-3-5-haiku-latest" in str(denied.value)
        finally:
            await sdk.close()
    finally:
        await client.close()


async def test_a_budget_admits_exactly_what_it_allows_across_two_replicas(keyed: Stack, redis: aioredis.Redis) -> None:
    """200 concurrent requests, half to each of two ingresses, on a key whose budget pays for 50."""
    keyed.fake.state.faults["openai"].reply = REPLY
    cost = REPLY_TOKENS * OUT_PRICE / 1_000_000  # each request's worst case, and its real cost
    tenant = f"t-{uuid.uuid4().hex[:6]}"
    record, secret = await _store(redis, keyed).create(tenant=tenant, budgets=(Budget(usd=50 * cost, per="day"),))
    second = await keyed.add_ingress()
    clients = [Client(keyed.ingress.address), Client(second.address)]
    try:
        for c in clients:
            await _until(lambda c=c: _is(_status(c, secret, _msg("warm", route="default", sampling=gateway_pb2.Sampling(
                max_tokens=1))), grpc.StatusCode.OK))
        # The warm-up cost something: a fresh key for the measured run.
        record, secret = await _store(redis, keyed).create(tenant=tenant, budgets=(Budget(usd=50 * cost, per="day"),))
        await asyncio.sleep(0.6)

        async def one(i: int) -> grpc.StatusCode:
            req = _msg(f"question {i}", route="metered", sampling=gateway_pb2.Sampling(max_tokens=REPLY_TOKENS))
            try:
                await clients[i % 2].complete(req, key=secret)
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                    md = dict(exc.trailing_metadata() or ())
                    assert md["x-llmgw-budget"] == "key:day" and "budget of key" in (exc.details() or "")
                    assert float(md["x-llmgw-budget-remaining-usd"]) < cost
                return exc.code()
            return grpc.StatusCode.OK

        results = await asyncio.gather(*(one(i) for i in range(200)))
        assert results.count(grpc.StatusCode.OK) == 50
        assert results.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == 150
        ledger = _ledger(redis, keyed)

        async def settled() -> bool:
            return await ledger.window_spend(tenant, "key", record.id, "day") == 50 * round(cost * NANO)

        await _until(settled)
        assert await ledger.window_spend(tenant, "key", record.id, "day") <= record.budgets[0].limit_nano
    finally:
        for c in clients:
            await c.close()


async def test_a_stream_aborted_half_way_is_charged_for_what_was_sent(keyed: Stack, redis: aioredis.Redis) -> None:
    keyed.fake.state.faults["openai"].reply = " ".join(f"word{i}" for i in range(60))
    keyed.fake.state.faults["openai"].chunk_delay_ms = 20
    tenant = f"t-{uuid.uuid4().hex[:6]}"
    record, secret = await _store(redis, keyed).create(tenant=tenant, budgets=(Budget(usd=5, per="month"),))
    client = Client(keyed.ingress.address)
    try:
        await _until(lambda: _is(_status(client, secret, _msg("w", sampling=gateway_pb2.Sampling(max_tokens=1))),
                                 grpc.StatusCode.OK))
        ledger = _ledger(redis, keyed)
        before = await ledger.window_spend(tenant, "key", record.id, "month")
        call = client.stub.StreamComplete(_msg("tell me", route="metered", sampling=gateway_pb2.Sampling(
            max_tokens=200)), metadata=(("authorization", f"Bearer {secret}"),), timeout=10)
        got = []
        async for chunk in call:
            got.append(chunk)
            if len(got) == 10:
                break
        call.cancel()
        rid = got[0].request_id
        event = events_pb2.ResponseEvent.FromString(
            (await read_topic(keyed.ingress_settings.kafka_bootstrap, RESPONSES_TOPIC, [rid]))[rid])  # type: ignore[union-attr]
        assert event.status == "ABORTED" and event.key_id == record.id
        sent_tokens = count_tokens("".join(c.delta for c in got))
        # Output-only price: the charge is the tokens sent (some may have left before the cancel
        # reached the ingress), far below the whole answer's 60+ words.
        assert sent_tokens * OUT_PRICE * 1000 <= event.charged_nanousd < 60 * OUT_PRICE * 1000
        charged = event.charged_nanousd

        async def settled() -> bool:
            return await ledger.window_spend(tenant, "key", record.id, "month") - before == charged

        await _until(settled)
    finally:
        await client.close()


async def test_unpriced_models_are_refused_under_a_budget(keyed: Stack, redis: aioredis.Redis) -> None:
    _, budgeted = await _store(redis, keyed).create(tenant="acme", budgets=(Budget(usd=1, per="day"),))
    client = Client(keyed.ingress.address)
    try:
        await _until(lambda: _is(_status(client, budgeted), grpc.StatusCode.OK))
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await client.complete(_msg("hi", route="unpriced"), key=budgeted)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "no-price-1" in (refused.value.details() or "")
    finally:
        await client.close()


async def test_spend_from_events_equals_the_live_counters(
        keyed: Stack, redis: aioredis.Redis, capsys: pytest.CaptureFixture[str]) -> None:
    tenant = f"t-{uuid.uuid4().hex[:6]}"
    store = _store(redis, keyed)
    budgeted, secret_a = await store.create(tenant=tenant, budgets=(Budget(usd=10, per="month"),))
    plain, secret_b = await store.create(tenant=tenant)
    client = Client(keyed.ingress.address)
    rids: list[str] = []
    try:
        await _until(lambda: _is(_status(client, secret_b, _msg("warm-up")), grpc.StatusCode.OK))
        for i, secret in enumerate([secret_a, secret_b, secret_a, secret_b]):
            reply = await client.stub.Complete(_msg(f"spend {i}"), metadata=(("authorization", f"Bearer {secret}"),))
            rids.append(reply.request_id)
        hit = await client.stub.Complete(_msg("spend 0"), metadata=(("authorization", f"Bearer {secret_b}"),))
        assert hit.cache_hit
        rids.append(hit.request_id)
        await read_topic(keyed.ingress_settings.kafka_bootstrap, RESPONSES_TOPIC, rids)  # type: ignore[union-attr]
        ledger = _ledger(redis, keyed)
        today = utc_day(time.time())
        tomorrow = datetime.fromordinal(today.toordinal() + 1).date()
        for key in (budgeted, plain):
            from_events, n = await events_spend(keyed.ingress_settings.kafka_bootstrap, since=today,  # type: ignore[union-attr]
                                                until=tomorrow, key=key.id)
            live = sum((await ledger.daily(tenant, "key", key.id, [today])).values())
            assert from_events == live > 0 and n >= 2
        tenant_events, _ = await events_spend(keyed.ingress_settings.kafka_bootstrap, since=today,  # type: ignore[union-attr]
                                              until=tomorrow, tenant=tenant)
        assert tenant_events == await ledger.window_spend(tenant, "tenant", tenant, "day")
        # The command says so.
        code = await asyncio.to_thread(cli, [
            "spend", "--key", budgeted.id, "--since", today.isoformat(), "--until", tomorrow.isoformat(),
            "--bootstrap", keyed.ingress_settings.kafka_bootstrap,  # type: ignore[union-attr]
            "--redis-url", keyed.ingress_settings.keys_redis_url, "--prefix", f"{keyed.prefix}:keys",  # type: ignore[union-attr]
            "--spend-prefix", f"{keyed.prefix}:spend"])
        out = capsys.readouterr().out
        assert code == 0 and "agree" in out, out
        requests = await read_topic(keyed.ingress_settings.kafka_bootstrap, REQUESTS_TOPIC, rids[:1])  # type: ignore[union-attr]
        assert events_pb2.RequestEvent.FromString(requests[rids[0]]).key_id == budgeted.id
    finally:
        await client.close()


async def test_a_tenant_budget_covers_all_its_keys_and_the_cli_sets_it(
        keyed: Stack, redis: aioredis.Redis, capfd: pytest.CaptureFixture[str]) -> None:
    settings = keyed.ingress_settings
    assert settings is not None
    tenant = f"t-{uuid.uuid4().hex[:6]}"
    store = _store(redis, keyed)
    _, first = await store.create(tenant=tenant)
    second_key, second = await store.create(tenant=tenant)
    args = ["--redis-url", settings.keys_redis_url, "--prefix", f"{keyed.prefix}:keys"]
    # $0.00001 a day: less than one request's worst case on the default route (64 output tokens).
    assert await asyncio.to_thread(cli, ["keys", "tenant", tenant, "--budget", "0.00001/day", *args]) == 0
    assert "$1e-05 per day" in capfd.readouterr().out
    client = Client(keyed.ingress.address)
    try:
        for secret in (first, second):
            async def refused(secret: str = secret) -> bool:
                return await _status(client, secret, _msg(f"x {secret[-4:]}")) == grpc.StatusCode.RESOURCE_EXHAUSTED
            await _until(refused)
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await client.complete(_msg("once more"), key=first)
        assert f"budget of tenant {tenant}" in (exc.value.details() or "")
        # Lifted with the CLI: served again, with no restart.
        assert await asyncio.to_thread(cli, ["keys", "tenant", tenant, "--no-budget", *args]) == 0
        await _until(lambda: _is(_status(client, second, _msg("after")), grpc.StatusCode.OK))
        # A key's scopes replaced with the CLI apply at once too.
        assert await asyncio.to_thread(cli, ["keys", "update", second_key.id, "--routes", "metered", *args]) == 0
        await _until(lambda: _is(_status(client, second, _msg("scoped")), grpc.StatusCode.PERMISSION_DENIED))
    finally:
        await client.close()


async def test_a_keys_own_rate_limit_is_enforced_and_changed_live(
        keyed: Stack, redis: aioredis.Redis) -> None:
    settings = keyed.ingress_settings
    assert settings is not None
    args = ["--redis-url", settings.keys_redis_url, "--prefix", f"{keyed.prefix}:keys"]
    record, secret = await _store(redis, keyed).create(tenant="acme", limits=(KeyLimit(limit=3, per="minute"),))
    client = Client(keyed.ingress.address)
    try:
        await _until(lambda: _is(_status(client, secret, _msg("r0")), grpc.StatusCode.OK))
        # The limiter follows the store too: within KEYS_POLL_S it has the key's rule, and from
        # then on the minute holds 3 (requests made before it had the rule count nowhere).
        sent = 0

        async def refused() -> bool:
            nonlocal sent
            sent += 1
            return await _status(client, secret, _msg(f"r{sent}")) == grpc.StatusCode.RESOURCE_EXHAUSTED

        await _until(refused)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await client.complete(_msg("over"), key=secret)
        md = dict(refused.value.trailing_metadata() or ())
        assert md["x-ratelimit-limit-hit"] == f"{record.id}.requests-per-minute"
        # Another key of the same tenant is not held by it.
        _, other = await _store(redis, keyed).create(tenant="acme")
        await _until(lambda: _is(_status(client, other, _msg("other")), grpc.StatusCode.OK))
        # Lifted with the CLI, without a restart.
        assert await asyncio.to_thread(cli, ["keys", "update", record.id, "--no-limits", *args]) == 0
        await _until(lambda: _is(_status(client, secret, _msg("lifted")), grpc.StatusCode.OK))
    finally:
        await client.close()
