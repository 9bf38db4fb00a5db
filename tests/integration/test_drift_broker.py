"""The drift job as it runs in production: its own process, the real embedding model, Kafka in
and out. A stationary stream raises no incident; a stream whose mix shifts to a new topic raises
one that names it. The references land in Redis, where an analyst can accept one."""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from llmgw.cli import main as cli
from llmgw.events.v1 import events_pb2
from llmgw.kit.embedded import free_port
from llmgw.kit.kafka import DRIFT_METRICS_TOPIC, DRIFT_TOPIC, ensure_topics

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Questions customers of a software product ask; the shift brings a topic the product never saw.
_KNOWN = {
    "password": ["How do I reset my password{}?", "I forgot my password{}, what now?",
                 "The password reset email{} never arrives.", "Can I change my password{} from the app?"],
    "billing": ["Why was I charged twice{}?", "Where can I download my invoice{}?",
                "How do I update the card on my account{}?", "Can I get a refund for last month{}?"],
    "export": ["How do I export my data to CSV{}?", "The PDF export{} is missing a column.",
               "Can I schedule a weekly export{}?", "Export to Excel{} fails for large reports."],
}
_NEW = ["Which wine goes best with grilled salmon{}?", "Is a Rioja a good match for lamb{}?",
        "What temperature should I serve pinot noir at{}?", "Can I pair red wine with fish{}?"]
_TAILS = ["", " please", " today", " again", " for my team", " on mobile", " since yesterday", " urgently"]


def _texts(rng: random.Random, n: int, new_share: float) -> list[str]:
    """Session-shaped: a customer asks 1-6 questions on one subject in a row."""
    out: list[str] = []
    while len(out) < n:
        pool = _NEW if rng.random() < new_share else _KNOWN[rng.choice(list(_KNOWN))]
        for _ in range(rng.randint(1, 6)):
            out.append(rng.choice(pool).format(rng.choice(_TAILS)))
    return out[:n]


@pytest.fixture
def drift_job(topics_ready: str, redis_url: str, tmp_path: Path) -> Iterator[tuple[str, str]]:
    topic = f"drift-in-{uuid.uuid4().hex[:6]}"
    asyncio.run(ensure_topics(topics_ready, {topic: 1}))
    env = {**os.environ, "KAFKA_BOOTSTRAP": topics_ready, "REQUESTS_TOPIC": topic,
           "APP_ID": f"drift-test-{uuid.uuid4().hex[:6]}", "PORT": str(free_port()), "WINDOW_SIZE": "50",
           "REFERENCE_SIZE": "300", "BATCH_SIZE": "100", "BATCH_SECONDS": "1", "SEGMENT_BY": "tenant,prompt",
           "REDIS_URL": redis_url, "BASELINE_POLL_S": "1", "RECENT_SNAPSHOT_S": "1", "HF_HUB_OFFLINE": "1"}
    log = (tmp_path / "drift.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "llmgw.services.drift"], env=env, stdout=log, stderr=log)
    try:
        yield topic, topics_ready
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


async def _produce(bootstrap: str, topic: str, tenant: str, texts: list[str], start: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False)
    await producer.start()
    try:
        for i, text in enumerate(texts, start):
            ev = events_pb2.RequestEvent(request_id=f"{tenant}-{i}", tenant=tenant, prompt="ask", time=float(i),
                                         variables={"question": text})
            await producer.send(topic, ev.SerializeToString(), key=ev.request_id.encode())
        await producer.flush()
    finally:
        await producer.stop()


async def _collect(bootstrap: str, segment: str, until: int, timeout_s: float) -> tuple[list[dict], list[dict]]:  # type: ignore[type-arg]
    """(window records, incidents) of ``segment`` until ``until`` windows have been scored."""
    consumer = AIOKafkaConsumer(DRIFT_TOPIC, DRIFT_METRICS_TOPIC, bootstrap_servers=bootstrap,
                                auto_offset_reset="earliest", enable_auto_commit=False,
                                group_id=f"t-{uuid.uuid4().hex[:6]}")
    await consumer.start()
    windows: list[dict] = []  # type: ignore[type-arg]
    incidents: list[dict] = []  # type: ignore[type-arg]
    try:
        async with asyncio.timeout(timeout_s):
            while len(windows) < until:
                for tp, batch in (await consumer.getmany(timeout_ms=500)).items():
                    for r in batch:
                        rec = json.loads(r.value)
                        if rec["segment"] != segment:
                            continue
                        if tp.topic == DRIFT_TOPIC:
                            incidents.append(rec)
                        elif "detectors" in rec:
                            windows.append(rec)
    finally:
        await consumer.stop()
    return windows, incidents


async def test_stationary_stream_is_quiet_and_a_new_topic_raises_an_incident_that_names_it(
    drift_job: tuple[str, str], redis_url: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    topic, bootstrap = drift_job
    tenant = f"t{uuid.uuid4().hex[:6]}"
    segment = f"{tenant}/ask"
    rng = random.Random(11)
    await _produce(bootstrap, topic, tenant, _texts(rng, 300 + 600, 0.0), 0)
    windows, incidents = await _collect(bootstrap, segment, 12, 180)
    assert incidents == [], incidents
    assert windows[0]["reference"]["status"] == "provisional"
    # A detector over the last N inputs scores from the window where N inputs are past the reference.
    assert set(windows[0]["detectors"]) == {"topic@50", "mmd@50"}
    assert set(windows[3]["detectors"]) == {"topic@50", "topic@200", "novelty@200", "mmd@50", "mmd@100"}

    await _produce(bootstrap, topic, tenant, _texts(rng, 600, 0.3), 900)
    windows, incidents = await _collect(bootstrap, segment, 24, 180)
    opened = [i for i in incidents if i["state"] == "OPEN"]
    assert opened, [w["detectors"] for w in windows[12:]]
    top = opened[0]["clusters"][0]
    assert top["cell"] == "novel" and top["current_share"] > top["reference_share"]
    new_words = {w.strip("?{}").lower() for t in _NEW for w in t.split()}
    # The most novel inputs lead: keywords and examples are about the new topic.
    assert top["keywords"][0] in new_words and sum(k in new_words for k in top["keywords"]) * 2 > len(top["keywords"])
    assert top["examples"] and any(t.split("{")[0] in top["examples"][0] for t in _NEW), top["examples"]
    assert opened[0]["window"]["offsets"] and 0 < opened[0]["p_value"] <= 0.01

    # The incident's report page: statistic over time, clusters, projection, offsets.
    out = tmp_path / "reports"
    assert await asyncio.to_thread(cli, ["drift", "report", "--bootstrap", bootstrap, "--incident",
                                         opened[0]["incident_id"], "--out", str(out), "--timeout", "3"]) == 0
    page = (out / f"{opened[0]['incident_id']}.html").read_text()
    assert opened[0]["incident_id"] in page and page.count("<svg") == 3 and "novel" in page
    capsys.readouterr()

    # The provisional reference is in Redis; an analyst accepts the recent (shifted) traffic.
    assert await asyncio.to_thread(cli, ["drift", "baseline", "list", "--redis", redis_url]) == 0
    assert segment in capsys.readouterr().out
    assert await asyncio.to_thread(cli, ["drift", "baseline", "accept", "--segment", segment, "--source", "recent",
                                         "--by", "ana", "--redis", redis_url]) == 0
    assert "accepted" in capsys.readouterr().out
    # The job switches to it with the next batch: the open incident closes, windows now cite it.
    await _produce(bootstrap, topic, tenant, _texts(rng, 200, 0.3), 1500)
    windows, incidents = await _collect(bootstrap, segment, 28, 120)
    assert any(i["state"] == "CLOSED" and i.get("reason") == "re-baselined" for i in incidents)
    assert windows[-1]["reference"]["status"] == "accepted"
