"""The whole request path through real gRPC servers, real Redis and a real Kafka broker."""

from __future__ import annotations

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from llmgw.events.v1 import events_pb2
from llmgw.gateway.v1 import gateway_pb2
from llmgw.services.drift.text import segment_of
from llmgw.stack import Stack
from tests.helpers import Client, prompt_request, read_topic

pytestmark = pytest.mark.integration


@pytest.fixture
async def client(stack: Stack):
    c = Client(stack.ingress.address)
    yield c
    await c.close()


async def test_completion_then_cache_hit(stack: Stack, client: Client) -> None:
    first = await client.complete(prompt_request("the cat sat on the mat"))
    assert first.text.startswith("[openai:gpt-4o-mini]")
    assert "the cat sat on the mat" in first.text
    assert first.provider == "openai" and not first.cache_hit
    assert first.prompt_version.startswith("v1@")
    assert first.usage.input_tokens > 0 and first.usage.HasField("cost_usd")
    second = await client.complete(prompt_request("the cat sat on the mat"))
    assert second.cache_hit and second.text == first.text
    assert second.request_id != first.request_id
    assert stack.fake.state.calls["openai"] == 1


async def test_events_reach_kafka(stack: Stack, client: Client, topics_ready: str) -> None:
    a = await client.complete(prompt_request("events please"))
    b = await client.complete(prompt_request("events please"))
    ids = {a.request_id, b.request_id}
    requests = await read_topic(topics_ready, "llm.requests", ids)
    responses = await read_topic(topics_ready, "llm.responses", ids)
    assert set(requests) == ids and set(responses) == ids
    req = events_pb2.RequestEvent.FromString(requests[a.request_id])
    assert req.tenant == "acme" and req.prompt == "summarize" and req.variables["text"] == "events please"
    hit = events_pb2.ResponseEvent.FromString(responses[b.request_id])
    assert hit.cache_hit and hit.status == "OK" and hit.text == b.text
    # Keyed by the drift segment (one partition per segment, one drift replica per segment);
    # responses stay keyed by request id.
    segment = f"acme/{req.route}/summarize/{req.label or '-'}"
    assert segment == segment_of(req)  # the drift job's segment of the event
    by_key = await read_topic(topics_ready, "llm.requests", [segment])
    assert segment in by_key and req.route


@pytest.mark.parametrize(
    ("req", "field"),
    [
        (gateway_pb2.CompleteRequest(), "prompt"),
        (gateway_pb2.CompleteRequest(prompt="summarize"), "variables.text"),
        (gateway_pb2.CompleteRequest(prompt="summarize", variables={"text": "x", "bogus": "y"}), "variables.bogus"),
        (gateway_pb2.CompleteRequest(messages=[gateway_pb2.Message(role="robot", content="hi")]), "messages[0].role"),
        (gateway_pb2.CompleteRequest(messages=[gateway_pb2.Message(role="user", content=" ")]), "messages[0].content"),
        (
            gateway_pb2.CompleteRequest(
                messages=[gateway_pb2.Message(role="user", content="hi")],
                sampling=gateway_pb2.Sampling(temperature=5),
            ),
            "sampling.temperature",
        ),
    ],
)
async def test_bad_input_is_invalid_argument_naming_the_field(
    stack: Stack, client: Client, req: gateway_pb2.CompleteRequest, field: str, topics_ready: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.complete(req)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in err.value.details()
    assert stack.fake.state.calls == {"openai": 0, "anthropic": 0}


async def test_auth_errors(stack: Stack, client: Client) -> None:
    for key in (None, "wrong-key"):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await client.complete(prompt_request(), key=key)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_unknown_prompt_and_label_are_not_found(stack: Stack, client: Client) -> None:
    for req in (
        gateway_pb2.CompleteRequest(prompt="nope", variables={"text": "x"}),
        prompt_request(label="staging"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await client.complete(req)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_fallback_to_anthropic_with_its_own_variant(stack: Stack, client: Client) -> None:
    stack.fake.state.faults["openai"].fail_next = 2  # the shipped route tries each target twice
    stack.fake.state.faults["openai"].status = 500
    resp = await client.complete(prompt_request("fall back please"))
    assert resp.provider == "anthropic"
    assert [(a.provider, a.status) for a in resp.attempts] == [("openai", "error"), ("openai", "error"),
                                                                 ("anthropic", "ok")]
    assert "HTTP 500" in resp.attempts[0].error
    # The anthropic variant of the prompt wraps the text in <text> tags.
    assert "<text>fall back please</text>" in resp.text


async def test_every_provider_failing_is_unavailable_listing_attempts(stack: Stack, client: Client) -> None:
    for name in ("openai", "anthropic"):
        stack.fake.state.faults[name].error_rate = 1.0
        stack.fake.state.faults[name].status = 529 if name == "anthropic" else 429
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.complete(prompt_request("nobody home"))
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "openai/gpt-4o-mini" in err.value.details() and "HTTP 529" in err.value.details()


async def test_raw_messages_with_system_prompt(stack: Stack, client: Client) -> None:
    req = gateway_pb2.CompleteRequest(
        messages=[gateway_pb2.Message(role="system", content="be brief"),
                  gateway_pb2.Message(role="user", content="raw question")],
    )
    resp = await client.complete(req)
    assert "raw question" in resp.text and resp.prompt_version == ""


async def test_streaming_then_replay_with_same_chunks(stack: Stack, client: Client) -> None:
    req = prompt_request("stream me some words")
    first = await client.stream(req)
    assert first[-1].final and not first[-1].cache_hit and first[-1].provider == "openai"
    deltas = [c.delta for c in first if not c.final]
    assert len(deltas) > 3 and "stream me some words" in "".join(deltas)
    assert all(c.request_id == first[0].request_id for c in first)
    await _settle(stack)
    second = await client.stream(req)
    assert second[-1].final and second[-1].cache_hit
    assert [c.delta for c in second if not c.final] == deltas
    # A plain request is answered from the streamed entry too.
    plain = await client.complete(req)
    assert plain.cache_hit and plain.text == "".join(deltas)


async def test_server_reflection_lists_the_gateway(stack: Stack) -> None:
    async with grpc.aio.insecure_channel(stack.ingress.address) as ch:
        stub = reflection_pb2_grpc.ServerReflectionStub(ch)
        call = stub.ServerReflectionInfo()
        await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
        resp = await call.read()
        await call.done_writing()
        names = {s.name for s in resp.list_services_response.service}
    assert "llmgw.gateway.v1.Gateway" in names and "grpc.health.v1.Health" in names


async def _settle(stack: Stack) -> None:
    """Wait for the ingress's after-reply work (cache store) so the next call can hit."""
    from llmgw.services.ingress.core import Gateway

    servicer = stack.ingress.service.servicers[0][0]
    core: Gateway = servicer._core
    await core.drain()


_WEATHER = gateway_pb2.Tool(name="get_weather", parameters='{"type":"object","properties":{"city":{"type":"string"}}}')


async def test_tools_through_the_grpc_contract_with_a_model_per_request(stack: Stack, client: Client) -> None:
    """The gRPC face carries what the HTTP faces do: tools, tool calls back (whole and as
    deltas), tool results, and ``model`` naming the route by its first target."""
    req = gateway_pb2.CompleteRequest(model="anthropic/claude-3-5-haiku-latest", tools=[_WEATHER],
                                      tool_choice=gateway_pb2.ToolChoice(mode="required"),
                                      messages=[gateway_pb2.Message(role="user", content="Madrid")])
    resp = await client.complete(req)
    assert resp.provider == "anthropic" and resp.finish_reason == "tool_use"
    (call,) = resp.tool_calls
    assert call.name == "get_weather" and call.arguments == '{"city": "Madrid"}'
    chunks = await client.stream(gateway_pb2.CompleteRequest(
        model="anthropic-first", tools=[_WEATHER], messages=req.messages, cache_mode=gateway_pb2.CompleteRequest.BYPASS))
    deltas = [d for c in chunks for d in c.tool_calls]
    assert deltas[0].id == call.id and "".join(d.arguments for d in deltas) == call.arguments
    follow = gateway_pb2.CompleteRequest(model="anthropic-first", tools=[_WEATHER], messages=[
        *req.messages, gateway_pb2.Message(role="assistant", tool_calls=[call]),
        gateway_pb2.Message(role="tool", tool_call_id=call.id, content="30 C")])
    done = await client.complete(follow)
    assert done.text == "[anthropic:claude-3-5-haiku-latest] The tool said: 30 C" and not done.tool_calls


async def test_an_unknown_model_or_one_that_contradicts_the_route_is_refused(stack: Stack, client: Client) -> None:
    msgs = [gateway_pb2.Message(role="user", content="hi")]
    with pytest.raises(grpc.aio.AioRpcError) as nf:
        await client.complete(gateway_pb2.CompleteRequest(model="openai/gpt-99", messages=msgs))
    assert nf.value.code() == grpc.StatusCode.NOT_FOUND and "gpt-99" in (nf.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await client.complete(gateway_pb2.CompleteRequest(model="default", route="anthropic-first", messages=msgs))
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT and (bad.value.details() or "").startswith("model")
