"""Shared fixtures: real Redis and a real Kafka-protocol broker (Tansu), started as local processes.

Set LLMGW_TESTCONTAINERS=1 with a reachable Docker engine to use testcontainers instead;
LLMGW_TEST_REDIS_URL / LLMGW_TEST_KAFKA point at already-running ones.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from llmgw.kit.embedded import start_redis, start_tansu

# The services' stable state (the event spool's default directory) goes to a directory of this
# run, never the user's ~/.local/state: one run's leftovers must not replay into the next.
os.environ.setdefault("LLMGW_STATE_DIR", tempfile.mkdtemp(prefix="llmgw-test-state-"))
from llmgw.kit.kafka import ensure_topics
from llmgw.stack import Stack, start_stack


def _docker_wanted() -> bool:
    if os.environ.get("LLMGW_TESTCONTAINERS") != "1":
        return False
    try:
        import docker

        docker.from_env().ping()
    except Exception:
        return False
    return True


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    if url := os.environ.get("LLMGW_TEST_REDIS_URL"):
        yield url
        return
    if _docker_wanted():
        from testcontainers.redis import RedisContainer

        with RedisContainer() as c:
            yield f"redis://{c.get_container_host_ip()}:{c.get_exposed_port(6379)}/0"
        return
    proc = start_redis()
    try:
        yield f"redis://{proc.address}/0"
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    if bootstrap := os.environ.get("LLMGW_TEST_KAFKA"):
        yield bootstrap
        return
    if _docker_wanted():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer() as c:
            yield c.get_bootstrap_server()
        return
    proc = start_tansu()
    try:
        yield proc.address
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def embedder() -> Any:
    """The offline MiniLM model, loaded once for every test that needs it (seconds, and memory
    the in-process stacks of later tests share)."""
    import gc

    from llmgw.kit.embed import SentenceEmbedder

    model = SentenceEmbedder()
    # The model's hundreds of thousands of objects out of the collector's reach: later tests run
    # whole stacks in this process, and a full collection scanning them is a pause their
    # wall-clock deadlines would see.
    gc.collect()
    gc.freeze()
    return model


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture(scope="session")
def topics_ready(kafka_bootstrap: str) -> str:
    import asyncio

    asyncio.run(ensure_topics(kafka_bootstrap))
    return kafka_bootstrap


@pytest.fixture
async def stack(redis_url: str, topics_ready: str) -> AsyncIterator[Stack]:
    s = await start_stack(redis_url=redis_url, kafka_bootstrap=topics_ready)
    try:
        yield s
    finally:
        await s.stop()
