from __future__ import annotations

from dataclasses import replace

import pytest

from llmgw.domain import KeyMaterial, Message, Output, Part, ResponseFormat, Sampling, Tool, ToolCall, ToolChoice
from llmgw.services.cache.keys import cache_key, canonical_json

BASE = KeyMaterial(
    tenant="acme",
    route="default",
    prompt="summarize",
    prompt_version="v1@abc",
    variables={"text": "hello"},
    sampling=Sampling(temperature=0.0, max_tokens=100, top_p=1.0, stop=("END",)),
)


@pytest.mark.parametrize(
    "changed",
    [
        replace(BASE, tenant="globex"),
        replace(BASE, route="other"),
        replace(BASE, prompt="classify"),
        replace(BASE, prompt_version="v2@def"),
        replace(BASE, variables={"text": "hello!"}),
        replace(BASE, sampling=replace(BASE.sampling, temperature=0.5)),
        replace(BASE, sampling=replace(BASE.sampling, max_tokens=101)),
        replace(BASE, sampling=replace(BASE.sampling, top_p=0.9)),
        replace(BASE, sampling=replace(BASE.sampling, stop=("STOP",))),
        replace(BASE, messages=(Message("user", "hi"),)),
        replace(BASE, targets="0123456789abcdef"),  # the route's targets were edited
        replace(BASE, sampling=replace(BASE.sampling, seed=1)),
        replace(BASE, sampling=replace(BASE.sampling, presence_penalty=0.5)),
        replace(BASE, sampling=replace(BASE.sampling, frequency_penalty=0.5)),
        replace(BASE, output=Output(tools=(Tool("f", parameters='{"type":"object"}'),))),
        replace(BASE, output=Output(tools=(Tool("f", "does f", '{"type":"object"}'),))),
        replace(BASE, output=Output(tool_choice=ToolChoice("none"))),
        replace(BASE, output=Output(response_format=ResponseFormat("json_object"))),
        replace(BASE, output=Output(response_format=ResponseFormat("json_schema", "s", '{"type":"object"}'))),
        replace(BASE, messages=(Message("user", "", parts=(Part("text", "hi"), Part("image", url="https://x/a.png"))),)),
        replace(BASE, messages=(Message("user", "hi"), Message("assistant", "", tool_calls=(ToolCall("c", "f", "{}"),)),
                                Message("tool", "42", tool_call_id="c"))),
    ],
)
def test_every_field_that_changes_the_answer_changes_the_key(changed: KeyMaterial) -> None:
    assert cache_key(changed) != cache_key(BASE)


def test_system_message_is_part_of_the_key() -> None:
    a = replace(BASE, prompt="", prompt_version="", variables={},
                messages=(Message("system", "be terse"), Message("user", "hi")))
    b = replace(a, messages=(Message("system", "be verbose"), Message("user", "hi")))
    assert cache_key(a) != cache_key(b)


def test_variable_order_does_not_matter() -> None:
    a = replace(BASE, variables={"a": "1", "b": "2"})
    b = replace(BASE, variables={"b": "2", "a": "1"})
    assert cache_key(a) == cache_key(b)


def test_key_is_namespaced_by_tenant() -> None:
    assert cache_key(BASE, prefix="p").startswith("p:acme:")
    assert "hello" in canonical_json(BASE)


def test_layout_characters_in_names_are_escaped_so_patterns_cannot_cross_tenants() -> None:
    import fnmatch

    from llmgw.services.cache.keys import entry_pattern

    sneaky = cache_key(replace(BASE, tenant="a*:x"), prefix="p")
    assert sneaky.startswith("p:a%2A%3Ax:summarize:") and sneaky.count(":") == 4
    # Invalidating tenant "a" must not reach tenant "a*:x", nor the other way round.
    assert not fnmatch.fnmatchcase(sneaky, entry_pattern(prefix="p", tenant="a"))
    assert not fnmatch.fnmatchcase(cache_key(replace(BASE, tenant="ab"), prefix="p"),
                                   entry_pattern(prefix="p", tenant="a*"))


def test_a_material_computes_its_key_once_per_prefix() -> None:
    k = replace(BASE)
    assert k.memo == {}
    first = cache_key(k)
    assert cache_key(k) is first  # the second call reads the memo
    assert cache_key(k, prefix="p") != first and len(k.memo) == 2
    # The memo is not part of the value: equal materials stay equal, and a changed copy starts empty.
    assert k == BASE
    other = replace(k, tenant="globex")
    assert other.memo == {} and cache_key(other) != first


def test_the_key_is_built_from_the_sampling_and_targets_that_really_run() -> None:
    from pathlib import Path

    from llmgw.prompts import Registry
    from llmgw.services.ingress.effective import effective_sampling
    from llmgw.services.router.config import RouterConfig

    def routes(model: str, temperature: float | None = 0) -> RouterConfig:
        return RouterConfig.model_validate({
            "providers": {"openai": {"api_key_env": "X"}},
            "routes": {"default": {"defaults": {"temperature": temperature, "max_tokens": 300},
                                   "targets": [{"provider": "openai", "model": model}]}},
        })

    pv = Registry.load(Path(__file__).resolve().parents[2] / "prompts").resolve("summarize")
    caller = Sampling()  # the caller sets nothing
    sampling, targets = effective_sampling(caller, None, "", routes("gpt-4o-mini", 0.9))
    assert sampling.temperature == 0.9 and sampling.max_tokens == 300  # the route's defaults
    from dataclasses import replace as _replace

    pv = _replace(pv, spec=pv.spec.model_copy(update={"sampling": pv.spec.sampling.model_copy(
        update={"temperature": 0.2})}))
    sampling, _ = effective_sampling(caller, pv, "", routes("gpt-4o-mini", 0.9))
    assert sampling.temperature == 0.2  # the prompt version's come before the route's
    assert effective_sampling(Sampling(temperature=0.3), pv, "", routes("m"))[0].temperature == 0.3  # caller wins
    _, edited = effective_sampling(caller, None, "", routes("gpt-5-mini"))
    assert edited != targets and len(edited) == 16
    assert effective_sampling(caller, None, "", None) == (caller, "")


def test_tools_in_another_order_are_another_key_and_a_tool_result_is_part_of_it() -> None:
    f, g = Tool("f", parameters="{}"), Tool("g", parameters="{}")
    assert cache_key(replace(BASE, output=Output((f, g)))) != cache_key(replace(BASE, output=Output((g, f))))
    call = (Message("user", "hi"), Message("assistant", "", tool_calls=(ToolCall("c", "f", "{}"),)))
    a = replace(BASE, messages=(*call, Message("tool", "42", tool_call_id="c")))
    b = replace(BASE, messages=(*call, Message("tool", "43", tool_call_id="c")))
    assert cache_key(a) != cache_key(b)
