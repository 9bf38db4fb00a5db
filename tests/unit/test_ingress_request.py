from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmgw.domain import Message, Sampling
from llmgw.kit.errors import InvalidArgument, Unauthenticated
from llmgw.services.ingress.auth import ApiKeys
from llmgw.services.ingress.request import GatewayRequest


class TestAuth:
    keys = ApiKeys.parse("k1=acme, k2=globex")

    def test_known_keys_map_to_tenants(self) -> None:
        assert self.keys.tenant_for("Bearer k1") == "acme"
        assert self.keys.tenant_for("Bearer k2") == "globex"

    @pytest.mark.parametrize("header", [None, "", "k1", "Basic k1", "Bearer nope"])
    def test_anything_else_is_unauthenticated(self, header: str | None) -> None:
        with pytest.raises(Unauthenticated):
            self.keys.tenant_for(header)


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
