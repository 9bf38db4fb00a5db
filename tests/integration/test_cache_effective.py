"""The cache decides from what really runs: the prompt version's and the route's sampling, and the
route's targets. Through the gateway, real Redis and gRPC."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from llmgw.gateway.v1 import gateway_pb2
from llmgw.stack import REPO, start_fake_providers, start_stack
from tests.helpers import Client

pytestmark = pytest.mark.integration


def _prompt(root: Path, name: str, temperature: float) -> None:
    versions = root / name / "versions"
    versions.mkdir(parents=True)
    (versions / "v1.yaml").write_text(
        f"variables: {{q: {{}}}}\nsampling: {{temperature: {temperature}}}\n"
        "variants:\n  openai:\n    messages: [{role: user, content: '{{ q }}'}]\n"
        "  anthropic:\n    messages: [{role: user, content: '{{ q }}'}]\n")
    (root / name / "labels.yaml").write_text("production: v1\n")


async def test_a_prompt_at_temperature_09_is_not_cached_one_at_0_is(
    redis_url: str, topics_ready: str, tmp_path: Path
) -> None:
    _prompt(tmp_path / "prompts", "creative", 0.9)
    _prompt(tmp_path / "prompts", "exact", 0)
    stack = await start_stack(redis_url=redis_url, kafka_bootstrap=topics_ready, prompts_dir=tmp_path / "prompts")
    client = Client(stack.ingress.address)
    core = stack.ingress.service.servicers[0][0]._core
    try:
        for name, cached in (("creative", False), ("exact", True)):
            req = gateway_pb2.CompleteRequest(prompt=name, variables={"q": "same question"})  # caller sets no temperature
            first = await client.complete(req)
            await core.drain()
            again = await client.complete(req)
            assert not first.cache_hit and again.cache_hit is cached, name
    finally:
        await client.close()
        await stack.stop()


async def test_editing_a_routes_model_is_a_new_key(redis_url: str, topics_ready: str, tmp_path: Path) -> None:
    routes = yaml.safe_load((REPO / "services/router/routes.yaml").read_text())
    req = gateway_pb2.CompleteRequest(messages=[gateway_pb2.Message(role="user", content="which model?")])
    hits = []
    fake = await start_fake_providers()  # outlives the "redeploys"
    for model in ("gpt-4o-mini", "gpt-4o-mini", "gpt-5-mini"):
        routes["routes"]["default"]["targets"][0]["model"] = model
        (tmp_path / "routes.yaml").write_text(yaml.safe_dump(routes))
        # A redeploy with the edited file; the cache (same Redis prefix) survives it.
        stack = await start_stack(redis_url=redis_url, kafka_bootstrap=topics_ready, routes_file=tmp_path / "routes.yaml",
                                  prefix=f"edit-{tmp_path.name}", fake=fake)
        fake = stack.fake
        client = Client(stack.ingress.address)
        try:
            reply = await client.complete(req)
            hits.append((reply.cache_hit, reply.model))
            await stack.ingress.service.servicers[0][0]._core.drain()
        finally:
            await client.close()
            await stack.stop()
    await fake.stop()
    assert hits == [(False, "gpt-4o-mini"), (True, "gpt-4o-mini"), (False, "gpt-5-mini")]
