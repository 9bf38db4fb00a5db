"""The routing policy against scripted providers (the seam is faked; the router is real)."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmgw.domain import Message, RouteCall, Sampling
from llmgw.kit.errors import InvalidArgument, NotFound, Unavailable
from llmgw.prompts import Registry
from llmgw.services.router.config import RouterConfig
from llmgw.services.router.core import Router
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
        with pytest.raises(Unavailable, match="after the first chunk"):
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
        cfg = CONFIG.model_copy(update={"breaker": CONFIG.breaker.model_copy(
            update={"failure_threshold": 2, "open_seconds": 10})})
        o, a = ScriptedProvider("openai", []), ScriptedProvider("anthropic", [])
        return Router(cfg, {"openai": o, "anthropic": a}, Registry.load(REPO / "prompts"), clock=clock), o, a

    async def test_opens_after_threshold_skips_then_probes_and_closes(self) -> None:
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

    async def test_streams_skip_an_open_circuit(self) -> None:
        router, o, _ = self._router(FakeClock())
        o.script = ["retryable", "retryable"]
        for _ in range(2):
            await router.route(CALL)
        chunks = [c async for c in router.stream(CALL)]
        assert chunks[-1].completion is not None and chunks[-1].completion.attempts[0].status == "skipped"
