"""The routing policy against scripted providers (the seam is faked; the router is real)."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmgw.domain import Message, RouteCall, Sampling
from llmgw.kit.errors import InvalidArgument, NotFound, Unavailable
from llmgw.prompts import Registry
from llmgw.services.router.config import RouterConfig
from llmgw.services.router.core import Router
from llmgw.services.router.errors import ProviderError
from llmgw.testing import ScriptedProvider

REPO = Path(__file__).resolve().parents[2]
CONFIG = RouterConfig.model_validate({
    "providers": {"openai": {"api_key_env": "X"}, "anthropic": {"api_key_env": "Y"}},
    "routes": {
        "default": {"defaults": {"temperature": 0, "max_tokens": 64},
                    "targets": [{"provider": "openai", "model": "gpt"}, {"provider": "anthropic", "model": "claude"}]},
        "retrying": {"targets": [{"provider": "openai", "model": "gpt", "attempts": 2},
                                 {"provider": "anthropic", "model": "claude"}]},
    },
    "pricing": {"gpt": {"input": 1.0, "output": 2.0}},
})
CALL = RouteCall(route="default", messages=(Message("user", "hello"),))


def _router(openai: list, anthropic: list, **kw) -> tuple[Router, ScriptedProvider, ScriptedProvider]:  # type: ignore[type-arg]
    o = ScriptedProvider("openai", list(openai), **kw)
    a = ScriptedProvider("anthropic", list(anthropic), **kw)
    return Router(CONFIG, {"openai": o, "anthropic": a}, Registry.load(REPO / "prompts")), o, a


class TestRoute:
    async def test_first_target_answers_with_route_defaults_and_price(self) -> None:
        router, o, a = _router([None], [])
        c = await router.route(CALL)
        assert c.provider == "openai" and c.text == "openai says: hello"
        assert o.calls[0][3] == Sampling(temperature=0, max_tokens=64)
        assert c.usage.cost_usd == pytest.approx((10 * 1.0 + c.usage.output_tokens * 2.0) / 1e6)
        assert a.calls == []

    @pytest.mark.parametrize("kind", ["retryable", "config"])
    async def test_falls_back_on_retryable_and_config_errors(self, kind: str) -> None:
        router, _, _ = _router([kind], [None])
        c = await router.route(CALL)
        assert c.provider == "anthropic"
        assert [(x.provider, x.status) for x in c.attempts] == [("openai", "error"), ("anthropic", "ok")]

    async def test_unpriced_model_has_no_cost_rather_than_zero(self) -> None:
        router, _, _ = _router(["retryable"], [None])
        assert (await router.route(CALL)).usage.cost_usd is None

    async def test_caller_fault_is_invalid_argument_without_fallback(self) -> None:
        router, _, a = _router(["caller"], [None])
        with pytest.raises(InvalidArgument):
            await router.route(CALL)
        assert a.calls == []

    async def test_all_failing_is_unavailable_with_every_attempt(self) -> None:
        router, _, _ = _router(["retryable"], ["retryable"])
        with pytest.raises(Unavailable) as err:
            await router.route(CALL)
        assert len(err.value.attempts) == 2 and "openai/gpt" in err.value.message

    async def test_retries_within_a_target_before_falling_back(self) -> None:
        router, o, a = _router(["retryable", None], [])
        c = await router.route(RouteCall(route="retrying", messages=CALL.messages))
        assert c.provider == "openai" and len(o.calls) == 2 and a.calls == []

    async def test_unknown_route_is_not_found(self) -> None:
        router, _, _ = _router([], [])
        with pytest.raises(NotFound):
            await router.route(RouteCall(route="nope", messages=CALL.messages))

    async def test_each_provider_gets_its_own_prompt_variant(self) -> None:
        router, o, a = _router(["retryable"], [None])
        pv = Registry.load(REPO / "prompts").resolve("summarize")
        await router.route(RouteCall(route="default", prompt="summarize", prompt_version=pv.id,
                                     variables={"text": "abc"}))
        assert o.calls[0][2][0].content == "Summarize in one sentence: abc"
        assert a.calls[0][2][0].content.startswith("<text>abc</text>")


class TestStream:
    async def test_falls_back_before_the_first_chunk(self) -> None:
        router, _, _ = _router(["retryable"], [None])
        chunks = [c async for c in router.stream(CALL)]
        assert chunks[-1].final and chunks[-1].completion is not None
        assert chunks[-1].completion.provider == "anthropic"
        assert "".join(c.delta for c in chunks) == "anthropic says: hello"

    async def test_failure_after_the_first_chunk_is_an_error_not_a_truncation(self) -> None:
        router, _, a = _router([None], [None], fail_stream_after=2)
        got = []
        with pytest.raises(Unavailable, match="was cut off after 2 chunks"):
            async for c in router.stream(CALL):
                got.append(c)
        assert len(got) == 2 and a.calls == []


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class TestCircuitBreaker:
    def _router(self, clock: FakeClock) -> tuple[Router, ScriptedProvider, ScriptedProvider]:
        # Two calls and half of them failing open it; one probe decides: the old consecutive
        # breaker's behaviour, as a special case of the rate breaker's settings.
        cfg = CONFIG.model_copy(update={"breaker": CONFIG.breaker.model_copy(
            update={"min_calls": 2, "failure_rate": 0.5, "open_seconds": 10, "half_open_probes": 1})})
        o, a = ScriptedProvider("openai", []), ScriptedProvider("anthropic", [])
        return Router(cfg, {"openai": o, "anthropic": a}, Registry.load(REPO / "prompts"), clock=clock), o, a

    async def test_opens_at_its_rate_skips_then_probes_and_closes(self) -> None:
        clock = FakeClock()
        router, o, _ = self._router(clock)
        o.script = ["retryable", "retryable"]
        for _ in range(2):
            await router.route(CALL)
        assert router.breaker(CONFIG.routes["default"].targets[0]).state.name == "OPEN"
        calls_before = len(o.calls)
        c = await router.route(CALL)
        assert len(o.calls) == calls_before, "an open circuit makes no attempt"
        first = c.attempts[0]
        assert (first.provider, first.status, first.error) == ("openai", "skipped", "circuit open")
        clock.now += 11  # cool-down over: one probe goes through and closes the circuit
        c = await router.route(CALL)
        assert c.provider == "openai" and len(o.calls) == calls_before + 1
        assert router.breaker(CONFIG.routes["default"].targets[0]).state.name == "CLOSED"

    async def test_failed_probe_reopens(self) -> None:
        clock = FakeClock()
        router, o, _ = self._router(clock)
        o.script = ["retryable", "retryable", "config"]
        for _ in range(2):
            await router.route(CALL)
        clock.now += 11
        c = await router.route(CALL)
        assert c.provider == "anthropic" and c.attempts[0].status == "error"
        assert router.breaker(CONFIG.routes["default"].targets[0]).state.name == "OPEN"

    async def test_caller_faults_never_open_the_circuit(self) -> None:
        router, o, _ = self._router(FakeClock())
        o.script = ["caller"] * 3
        for _ in range(3):
            with pytest.raises(InvalidArgument):
                await router.route(CALL)
        assert router.breaker(CONFIG.routes["default"].targets[0]).state.name == "CLOSED"

    async def test_rate_limits_never_open_the_circuit_and_pause_the_target(self) -> None:
        clock = FakeClock()
        router, o, _ = self._router(clock)
        o.script = [ProviderError("openai", "rate_limited", "HTTP 429", status=429, retry_after_s=5.0)] * 5
        c = await router.route(CALL)
        assert c.provider == "anthropic"
        for _ in range(4):
            c = await router.route(CALL)
            assert c.attempts[0].status == "skipped" and "rate limited by the provider" in c.attempts[0].error
        assert len(o.calls) == 1, "a paused target is not called again until its retry-after passed"
        assert router.breaker(CONFIG.routes["default"].targets[0]).state.name == "CLOSED"
        clock.now += 5.1
        assert (await router.route(CALL)).attempts[0].status == "error"  # tried again (429 scripted)

    async def test_streams_skip_an_open_circuit(self) -> None:
        router, o, _ = self._router(FakeClock())
        o.script = ["retryable", "retryable"]
        for _ in range(2):
            await router.route(CALL)
        chunks = [c async for c in router.stream(CALL)]
        assert chunks[-1].completion is not None and chunks[-1].completion.attempts[0].status == "skipped"


class TestNoWastedWaits:
    async def test_a_retry_after_longer_than_the_wait_falls_back_at_once(self) -> None:
        router, o, _ = _router([ProviderError("openai", "retryable", "HTTP 503", status=503, retry_after_s=30.0)],
                               [None])
        c = await router.route(RouteCall(route="retrying", messages=CALL.messages))
        assert c.provider == "anthropic" and len(o.calls) == 1

    async def test_streams_retry_a_target_before_falling_back(self) -> None:
        router, o, a = _router(["retryable", None], [])
        chunks = [c async for c in router.stream(RouteCall(route="retrying", messages=CALL.messages))]
        assert chunks[-1].completion is not None and chunks[-1].completion.provider == "openai"
        assert len(o.calls) == 2 and a.calls == []
        assert [x.status for x in chunks[-1].completion.attempts] == ["error", "ok"]


class TestDeadlines:
    async def test_a_slow_primary_leaves_the_reserve_to_the_next_target(self) -> None:
        import time as _time

        router, o, a = _router([], [], delay_s={"gpt": 5.0})
        c = await router.route(RouteCall(route="default", messages=CALL.messages,
                                         deadline=_time.monotonic() + 3.0))
        assert c.provider == "anthropic"
        # The primary's timeout was cut to leave a reserve of 1 s (docs/routing.md) for the rest.
        assert o.timeouts[0] == pytest.approx(2.0, abs=0.1)
        assert a.timeouts[0] <= 1.05


class TestHedging:
    def _router(self, hedge: bool) -> tuple[Router, ScriptedProvider, ScriptedProvider]:
        cfg = RouterConfig.model_validate({
            "providers": {"openai": {"api_key_env": "X"}, "anthropic": {"api_key_env": "Y"}},
            "routes": {"default": {"hedge": hedge, "targets": [{"provider": "openai", "model": "gpt"},
                                                               {"provider": "anthropic", "model": "claude"}]}},
            "hedging": {"min_samples": 3, "min_delay_s": 0.01},
        })
        o, a = ScriptedProvider("openai", []), ScriptedProvider("anthropic", [])
        return Router(cfg, {"openai": o, "anthropic": a}, Registry.load(REPO / "prompts")), o, a

    async def test_a_primary_slower_than_its_p95_is_hedged_and_the_first_answer_wins(self) -> None:
        router, o, _ = self._router(hedge=True)
        for _ in range(3):  # the primary's recent latencies: fast
            assert (await router.route(CALL)).provider == "openai"
        o.delay_s["gpt"] = 5.0
        c = await router.route(CALL)
        assert c.provider == "anthropic" and c.text == "anthropic says: hello"
        assert [(x.provider, x.status) for x in c.attempts] == [("openai", "skipped"), ("anthropic", "ok")]
        assert "hedge" in c.attempts[0].error
        assert router.breaker(router._config.routes["default"].targets[0]).window() == (3, 0), \
            "the cancelled primary is no verdict on its health"

    async def test_off_by_default(self) -> None:
        router, o, a = self._router(hedge=False)
        for _ in range(3):
            await router.route(CALL)
        o.delay_s["gpt"] = 0.3
        c = await router.route(CALL)
        assert c.provider == "openai" and a.calls == []


class TestRetryAfter:
    def test_all_three_forms(self) -> None:
        import email.utils

        from llmgw.services.router.providers import retry_after_s

        assert retry_after_s({"retry-after-ms": "250", "retry-after": "3"}) == 0.25  # ms wins: more precise
        assert retry_after_s({"retry-after": "2"}) == 2.0
        assert retry_after_s({"retry-after": "1.5"}) == 1.5
        date = email.utils.formatdate(1_000_030, usegmt=True)
        assert retry_after_s({"retry-after": date}, now=1_000_000) == pytest.approx(30, abs=1)
        assert retry_after_s({"retry-after": email.utils.formatdate(10, usegmt=True)}, now=1_000_000) == 0.0
        assert retry_after_s({"retry-after": "soon"}) is None
        assert retry_after_s({}) is None
