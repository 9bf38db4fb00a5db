from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmgw.domain import Message, Output, Part, ResponseFormat, Sampling, Tool, ToolCall, ToolChoice
from llmgw.gateway.v1 import gateway_pb2
from llmgw.keys.ring import KeyRing, parse_bootstrap
from llmgw.kit.errors import InvalidArgument, Unauthenticated
from llmgw.services.ingress.request import GatewayRequest


class TestAuth:
    keys = KeyRing(bootstrap=parse_bootstrap("k1=acme, k2=globex"))

    def test_known_keys_map_to_tenants(self) -> None:
        assert self.keys.identify("Bearer k1").tenant == "acme"
        assert self.keys.identify("Bearer k2").tenant == "globex"

    @pytest.mark.parametrize("header", [None, "", "k1", "Basic k1", "Bearer nope"])
    def test_anything_else_is_unauthenticated(self, header: str | None) -> None:
        with pytest.raises(Unauthenticated):
            self.keys.identify(header)


@given(
    prompt=st.text(max_size=20),
    roles=st.lists(st.text(max_size=10), max_size=4),
    content=st.text(max_size=30),
    temperature=st.none() | st.floats(allow_nan=True, allow_infinity=True),
    max_tokens=st.none() | st.integers(-5, 5),
)
@settings(max_examples=300, deadline=None)
def test_any_input_validates_or_names_a_field(prompt, roles, content, temperature, max_tokens) -> None:  # type: ignore[no-untyped-def]
    req = GatewayRequest(
        prompt=prompt,
        messages=tuple(Message(r, content) for r in roles),
        sampling=Sampling(temperature=temperature, max_tokens=max_tokens),
    )
    try:
        req.validate_shape()
    except InvalidArgument as exc:
        assert exc.field
        return
    assert bool(prompt) != bool(roles)


def test_nan_temperature_is_rejected() -> None:
    req = GatewayRequest(messages=(Message("user", "hi"),), sampling=Sampling(temperature=float("nan")))
    with pytest.raises(InvalidArgument, match="temperature"):
        req.validate_shape()


class TestRequestMemo:
    """The servicer recognizes a repeat by its canonical bytes and reuses its conversion."""

    @staticmethod
    def _requests(max_bytes: int = 4096) -> Any:
        from llmgw.services.ingress.server import _Requests

        return _Requests(max_entries=8, max_bytes=max_bytes)

    def test_a_repeat_reuses_its_request_whatever_the_map_order(self) -> None:
        requests = self._requests()
        a = gateway_pb2.CompleteRequest(prompt="p", variables={"x": "1", "y": "2"})
        b = gateway_pb2.CompleteRequest(prompt="p")
        b.variables["y"] = "2"
        b.variables["x"] = "1"
        first = requests.convert(a)
        assert requests.convert(b) is first
        assert first.fingerprint and first.variables == {"x": "1", "y": "2"}
        other = requests.convert(gateway_pb2.CompleteRequest(prompt="p", variables={"x": "2", "y": "2"}))
        assert other is not first and other.fingerprint != first.fingerprint

    def test_an_invalid_request_is_refused_every_time(self) -> None:
        requests = self._requests()
        bad = gateway_pb2.CompleteRequest(prompt="p", cache_mode=7)  # type: ignore[arg-type]
        for _ in range(2):
            with pytest.raises(InvalidArgument) as err:
                requests.convert(bad)
            assert err.value.field == "cache_mode"

    def test_a_large_request_is_converted_anew_without_a_fingerprint(self) -> None:
        requests = self._requests(max_bytes=16)
        big = gateway_pb2.CompleteRequest(prompt="p", variables={"text": "x" * 100})
        first, second = requests.convert(big), requests.convert(big)
        assert first == second and first is not second and first.fingerprint == b""


class TestToolsAndParts:
    """The new request fields are validated with the field named, before any call."""

    tool = Tool("get_weather", parameters='{"type":"object"}')

    @pytest.mark.parametrize(("req", "field"), [
        (GatewayRequest(messages=(Message("tool", "42"),)), "messages[0].tool_call_id"),
        (GatewayRequest(messages=(Message("user", "hi", tool_calls=(ToolCall("c", "f", "{}"),)),)),
         "messages[0].tool_calls"),
        (GatewayRequest(messages=(Message("user", "", parts=(Part("image", url="ftp://x"),)),)),
         "messages[0].parts[0].url"),
        (GatewayRequest(messages=(Message("user", "", parts=(Part("image", media_type="image/tiff", data="x"),)),)),
         "messages[0].parts[0]"),
        (GatewayRequest(messages=(Message("user", "", parts=(Part("audio", text="x"),)),)), "messages[0].parts[0].type"),
        (GatewayRequest(messages=(Message("user", "hi"), Message("assistant", "", tool_calls=(ToolCall("c", "f", "[1"),)),
                                  Message("tool", "x", tool_call_id="c"))), "messages[1].tool_calls[0].arguments"),
        (GatewayRequest(messages=(Message("user", "hi"),), output=Output((Tool("bad name"),))), "tools[0].name"),
        (GatewayRequest(messages=(Message("user", "hi"),), output=Output((tool, tool))), "tools[1].name"),
        (GatewayRequest(messages=(Message("user", "hi"),), output=Output((Tool("f", parameters="[]"),))),
         "tools[0].parameters"),
        (GatewayRequest(messages=(Message("user", "hi"),), output=Output(tool_choice=ToolChoice("required"))),
         "tool_choice"),
        (GatewayRequest(messages=(Message("user", "hi"),), output=Output((tool,), ToolChoice("tool", "other"))),
         "tool_choice"),
        (GatewayRequest(messages=(Message("user", "hi"),), output=Output(response_format=ResponseFormat("yaml"))),
         "response_format.type"),
        (GatewayRequest(messages=(Message("user", "hi"),),
                        output=Output(response_format=ResponseFormat("json_schema", schema="nope"))),
         "response_format.schema"),
        (GatewayRequest(messages=(Message("user", "hi"),), sampling=Sampling(presence_penalty=3)),
         "sampling.presence_penalty"),
    ])
    def test_bad_fields_are_named(self, req: GatewayRequest, field: str) -> None:
        with pytest.raises(InvalidArgument) as exc:
            req.validate_shape()
        assert exc.value.field == field

    def test_a_whole_tool_conversation_is_valid(self) -> None:
        GatewayRequest(messages=(
            Message("user", "", parts=(Part("text", "weather here?"), Part("image", media_type="image/png", data="x"))),
            Message("assistant", "", tool_calls=(ToolCall("c1", "get_weather", '{"city":"Paris"}'),)),
            Message("tool", "", tool_call_id="c1"),  # an empty result is a result
        ), output=Output((self.tool,), ToolChoice("tool", "get_weather"),
                         ResponseFormat("json_schema", "w", '{"type":"object"}'))).validate_shape()
