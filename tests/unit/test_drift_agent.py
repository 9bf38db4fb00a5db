"""The Faust agent itself, driven through ``test_context()`` (no broker): batches in, records out."""

from __future__ import annotations

import asyncio
import gc
import json
from collections.abc import Iterator

import numpy as np
import pytest

from llmgw.events.v1 import events_pb2
from llmgw.kit.kafka import DRIFT_METRICS_TOPIC, DRIFT_TOPIC
from llmgw.services.drift.app import create_app
from llmgw.services.drift.settings import DriftSettings
from tests.drift_synth import DIM, Topics


class _TopicEmbedder:
    """The model seam: 'subject<x> ...' texts map onto the synthetic topic x."""

    def __init__(self, topics: Topics) -> None:
        self.topics = topics
        self.rng = np.random.default_rng(0)

    def encode(self, texts: list[str]) -> np.ndarray:
        out = []
        for t in texts:
            c = self.topics.centers["abcdefgh".index(t.split("subject")[1][0])]
            v = c + 0.6 * self.rng.standard_normal(DIM) / np.sqrt(DIM)
            out.append(v / np.linalg.norm(v))
        return np.asarray(out, dtype=np.float32)


def _events(topics: Topics, n: int, mix: list[float]) -> list[bytes]:
    return [events_pb2.RequestEvent(request_id=i.request_id, tenant="acme", route="default", prompt="ask",
                                    label="production", variables={"q": i.text}, time=i.time).SerializeToString()
            for i in topics.stream(n, mix)]


@pytest.fixture(autouse=True)
def _close_faust_loops() -> Iterator[None]:
    """Faust (mode) creates an event loop of its own for a thread that asks outside a running loop
    and never closes it; close whatever such loops this test left behind."""
    def loops() -> list[asyncio.AbstractEventLoop]:
        # type(), not isinstance(): isinstance reads __class__, which some objects in the heap
        # answer with a deprecation warning (torch's, once the embedding model was loaded).
        return [o for o in gc.get_objects() if issubclass(type(o), asyncio.AbstractEventLoop)]

    before = {id(o) for o in loops()}
    yield
    for obj in loops():
        if id(obj) not in before and not obj.is_running() and not obj.is_closed():
            obj.close()


async def test_the_agent_publishes_window_metrics_and_a_new_topic_incident() -> None:
    topics = Topics(seed=5)
    sent: list[tuple[str, bytes, dict[str, object]]] = []

    async def send(topic: str, key: bytes, value: bytes) -> None:
        sent.append((topic, key, json.loads(value)))

    settings = DriftSettings(app_id="drift-agent-test", window_size=50, reference_size=300, batch_size=50,
                             batch_seconds=0.05, segment_by="tenant,prompt", global_segment="local")
    app = create_app(settings, _TopicEmbedder(topics), send=send, loop=asyncio.get_running_loop())
    agent = app.agents["llmgw.services.drift.app.detect"]
    base = [0.4, 0.3, 0.2, 0.1, 0.0, 0.0]
    raws = _events(topics, 300 + 500, base) + _events(topics, 800, [0.28, 0.21, 0.14, 0.07, 0.3, 0.0])
    async with agent.test_context() as ctx:
        for raw in raws:
            await ctx.put(raw, wait=False)
        # Every segment gets a window record per 50 inputs once its reference is full.
        want = 2 * (len(raws) - 300) // 50
        # A bound on a wedged agent only (about 20 s alone; it once passed 60 s on this 2-core
        # machine beside four benchmark processes): the loop ends as soon as the records are in.
        async with asyncio.timeout(240):
            while sum(1 for t, _, r in sent if t == DRIFT_METRICS_TOPIC and "detectors" in r) < want:
                await asyncio.sleep(0.05)
    metrics = [r for t, _, r in sent if t == DRIFT_METRICS_TOPIC]
    incidents = [r for t, _, r in sent if t == DRIFT_TOPIC]
    assert {r["segment"] for r in metrics} == {"*", "acme/ask"}
    assert any("detectors" in r for r in metrics if r["segment"] == "acme/ask")
    opened = [r for r in incidents if r["state"] == "OPEN" and r["segment"] == "acme/ask"]
    # The new topic's own group leads (named by its words), then the reference's novelty cell.
    assert opened and [c["cell"] for c in opened[0]["clusters"][:2]] == ["new", "novel"]
    assert "subjecte" in opened[0]["clusters"][0]["keywords"]
    assert all(key == r["segment"].encode() for t, key, r in sent)


def test_the_drift_job_reaches_a_secured_kafka_and_keeps_its_data_dir_absolute() -> None:
    import faust
    import pytest as _pytest

    from llmgw.kit.errors import ConfigError
    from llmgw.services.drift.app import broker_credentials
    from llmgw.services.drift.settings import DriftSettings

    plain = DriftSettings()
    assert broker_credentials(plain) is None
    assert plain.data_dir.startswith("/")  # never relative to a read-only working directory
    sasl = DriftSettings(kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="SCRAM-SHA-512",
                         kafka_sasl_username="drift", kafka_sasl_password="s3cret")  # type: ignore[arg-type]
    creds = broker_credentials(sasl)
    assert isinstance(creds, faust.SASLCredentials)
    assert creds.username == "drift" and creds.password == "s3cret" and creds.ssl_context is not None
    assert str(creds.mechanism.value) == "SCRAM-SHA-512"
    assert isinstance(broker_credentials(DriftSettings(kafka_security_protocol="SSL")), faust.SSLCredentials)
    with _pytest.raises(ConfigError, match="KAFKA_SECURITY_PROTOCOL"):
        broker_credentials(DriftSettings(kafka_security_protocol="TLS13"))


def test_the_pair_window_and_count_are_settings_of_the_job() -> None:
    """CUSUM_PAIR_WINDOW, CUSUM_PAIR_K, CUSUM_PAIR_WINDOW2, CUSUM_SESSION_LEN, LENGTH_CUSUM and
    LENGTH_BUDGET reach the detector; a window of 0 leaves the sequential detector on distance
    alone, a session length of 0 on per-input mixture bets."""
    from llmgw.kit.settings import load_settings
    from llmgw.services.drift.settings import DriftSettings

    assert DriftSettings().detector().cusum_pair_window == 400
    assert load_settings(DriftSettings, {"CUSUM_PAIR_WINDOW": "0"}).detector().cusum_pair_window == 0
    assert DriftSettings().detector().cusum_pair_k == 5
    assert load_settings(DriftSettings, {"CUSUM_PAIR_K": "20"}).detector().cusum_pair_k == 20
    assert DriftSettings().detector().cusum_pair_window2 == 0
    assert load_settings(DriftSettings, {"CUSUM_PAIR_WINDOW2": "200"}).detector().cusum_pair_window2 == 200
    assert DriftSettings().detector().cusum_session_len == 5
    assert load_settings(DriftSettings, {"CUSUM_SESSION_LEN": "0"}).detector().cusum_session_len == 0
    assert DriftSettings().detector().length_cusum is True
    assert load_settings(DriftSettings, {"LENGTH_CUSUM": "false"}).detector().length_cusum is False
    assert load_settings(DriftSettings, {"LENGTH_BUDGET": "0.5"}).detector().length_budget == 0.5
