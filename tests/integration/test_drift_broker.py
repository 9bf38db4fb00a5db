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
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from llmgw.cli import main as cli
from llmgw.events.v1 import events_pb2
from llmgw.kit.embedded import free_port
from llmgw.kit.kafka import DRIFT_METRICS_TOPIC, DRIFT_TOPIC, by_key, ensure_topics
from llmgw.services.drift.model import CUSUM, LENGTH, SEQUENTIAL

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


async def _quiet_start(bootstrap: str, topic: str, *, seed: int,
                       windows: int) -> tuple[str, str, random.Random, list[dict]]:  # type: ignore[type-arg]
    """A new segment's reference (300 inputs) and ``windows`` scored windows of the same traffic,
    which open nothing: (tenant, segment, the stream's rng, the window records)."""
    tenant = f"t{uuid.uuid4().hex[:6]}"
    segment = f"{tenant}/ask"
    rng = random.Random(seed)
    await _produce(bootstrap, topic, tenant, _texts(rng, 300 + 50 * windows, 0.0), 0)
    scored, incidents = await _collect(bootstrap, segment, windows, 180)
    assert incidents == [], incidents
    return tenant, segment, rng, scored


async def test_stationary_stream_is_quiet_and_a_new_topic_raises_an_incident_that_names_it(
    drift_job: tuple[str, str], redis_url: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    topic, bootstrap = drift_job
    tenant, segment, rng, windows = await _quiet_start(bootstrap, topic, seed=11, windows=12)
    assert windows[0]["reference"]["status"] == "provisional"
    # A detector over the last N inputs scores from the window where N inputs are past the reference.
    assert set(windows[0]["detectors"]) == {"topic@50", "mmd@50", CUSUM, LENGTH}
    assert set(windows[3]["detectors"]) == {"topic@50", "topic@200", "novelty@200", "mmd@50", "mmd@100", CUSUM, LENGTH}

    await _produce(bootstrap, topic, tenant, _texts(rng, 600, 0.3), 900)
    windows, incidents = await _collect(bootstrap, segment, 24, 180)
    # The window detectors' incidents (the sequential one has its own test below).
    opened = [i for i in incidents if i["state"] == "OPEN" and i["detector"] not in SEQUENTIAL]
    assert opened, [w["detectors"] for w in windows[12:]]
    top = opened[0]["clusters"][0]
    # The new topic's own group leads: inputs unlike the reference and like each other.
    assert top["cell"] == "new" and top["current_share"] > top["reference_share"] and top["size"] >= 2
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
    assert f"llmgw eval harvest --bootstrap {bootstrap} --incident {opened[0]['incident_id']}" in page
    capsys.readouterr()

    await asyncio.to_thread(_harvest_checks, tmp_path, bootstrap, topic, opened[0]["incident_id"], segment)

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


async def test_a_new_topic_at_a_few_percent_opens_a_sequential_incident_that_names_it(
        drift_job: tuple[str, str]) -> None:
    """The rare new topic: 6 % of traffic, which no window moves far; the sequential detector
    accumulates it input by input and its incident names the topic by its own examples."""
    topic, bootstrap = drift_job
    tenant, segment, rng, _ = await _quiet_start(bootstrap, topic, seed=5, windows=6)
    await _produce(bootstrap, topic, tenant, _texts(rng, 1000, 0.06), 600)
    windows, incidents = await _collect(bootstrap, segment, 26, 180)
    opened = [i for i in incidents if i["state"] == "OPEN" and i["detector"] == CUSUM]
    assert opened, [w["detectors"][CUSUM] for w in windows]
    inc = opened[0]
    assert inc["statistic"] >= inc["threshold"] and inc["p_value"] is None
    group = inc["clusters"][0]
    assert group["cell"] == "new" and group["examples"] and all(
        any(t.split("{")[0] in e for t in _NEW) for e in group["examples"]), group


def _ask_suite(root: Path) -> Path:
    """An eval suite for the ``ask`` prompt: the known questions, and one wine question already."""
    cases = [{"id": f"known-{i}", "vars": {"question": t.format("")}, "assert": [{"type": "no_refusal"}]}
             for i, t in enumerate(t for pool in _KNOWN.values() for t in pool)]
    cases.append({"id": "wine-salmon", "vars": {"question": _NEW[0].format("")}, "assert": [{"type": "no_refusal"}]})
    (root / "ask" / "cases").mkdir(parents=True)
    (root / "ask" / "cases" / "normal.yaml").write_text(yaml.safe_dump(cases))
    return root


def _wine(question: str) -> bool:
    return any(question.startswith(t.split("{")[0]) for t in _NEW)


def _harvest_checks(tmp_path: Path, bootstrap: str, topic: str, incident: str, segment: str) -> None:
    """Drift -> evals: the incident's inputs (read back from the request topic by the offsets it
    names) become candidate cases: all from the new topic, none repeating a case or each other."""
    common = ["--bootstrap", bootstrap, "--requests-topic", topic, "--segment-by", "tenant,prompt", "--timeout", "3"]
    evals = _ask_suite(tmp_path / "evals")
    assert cli(["eval", "harvest", "--incident", incident[:12], "--evals", str(evals), *common]) == 0
    got = yaml.safe_load((evals / "ask" / "cases" / "candidates.yaml").read_text())
    questions = [c["vars"]["question"] for c in got]
    assert got and all(_wine(q) for q in questions), questions
    assert not any(q.startswith(_NEW[0].split("{")[0]) for q in questions), "a copy of a case was kept"
    assert len({q.rstrip("?").split(" please")[0] for q in questions}) == len(questions), "near copies kept"
    assert all(c["tags"] == ["from-drift"] and "assert" not in c and c["source"]["incident"] == incident
               and c["source"]["segment"] == segment for c in got)
    # Harvesting again adds nothing: what waits for review counts as known.
    assert cli(["eval", "harvest", "--incident", incident, "--evals", str(evals), *common]) == 0
    assert len(yaml.safe_load((evals / "ask" / "cases" / "candidates.yaml").read_text())) == len(got)

    # A segment's traffic since a time: the inputs least like any case come first.
    evals = _ask_suite(tmp_path / "evals-segment")
    assert cli(["eval", "harvest", "--segment", segment, "--since", "1h", "--max", "5", "--evals", str(evals),
                *common]) == 0
    got = yaml.safe_load((evals / "ask" / "cases" / "candidates.yaml").read_text())
    assert len(got) == 5 and all(_wine(c["vars"]["question"]) for c in got[:3]), got


def _start_job(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    out = log.open("w")
    try:
        return subprocess.Popen([sys.executable, "-m", "llmgw.services.drift"], env={**os.environ, **env,
                                "PORT": str(free_port())}, stdout=out, stderr=out)
    finally:
        out.close()


def _stop_job(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def _tenants_on_every_partition(partitions: int) -> list[str]:
    """One tenant per partition: segment keys placed as the ingress places them."""
    by_partition: dict[int, str] = {}
    while len(by_partition) < partitions:
        tenant = f"t{uuid.uuid4().hex[:6]}"
        by_partition.setdefault(by_key(f"{tenant}/ask".encode(), list(range(partitions)), []), tenant)
    return [by_partition[p] for p in range(partitions)]


async def _produce_keyed(bootstrap: str, topic: str, batches: dict[str, list[str]], start: int) -> None:
    """Every tenant's texts, keyed by its segment (as the ingress keys llm.requests), interleaved."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False, partitioner=by_key)
    await producer.start()
    try:
        longest = max(len(t) for t in batches.values())
        for i in range(longest):
            for tenant, texts in batches.items():
                if i < len(texts):
                    ev = events_pb2.RequestEvent(request_id=f"{tenant}-{start + i}", tenant=tenant, prompt="ask",
                                                 time=float(start + i), variables={"question": texts[i]})
                    await producer.send(topic, ev.SerializeToString(), key=f"{tenant}/ask".encode())
        await producer.flush()
    finally:
        await producer.stop()


class _Records:
    """Everything the drift job published, read continuously in the background."""

    def __init__(self, bootstrap: str) -> None:
        self.metrics: list[dict] = []  # type: ignore[type-arg]
        self.incidents: list[dict] = []  # type: ignore[type-arg]
        self._consumer = AIOKafkaConsumer(DRIFT_TOPIC, DRIFT_METRICS_TOPIC, bootstrap_servers=bootstrap,
                                          auto_offset_reset="latest", enable_auto_commit=False,
                                          group_id=f"t-{uuid.uuid4().hex[:6]}")
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> _Records:
        await self._consumer.start()
        self._task = asyncio.ensure_future(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self._consumer.stop()

    async def _read(self) -> None:
        while True:
            for tp, batch in (await self._consumer.getmany(timeout_ms=300)).items():
                for r in batch:
                    (self.incidents if tp.topic == DRIFT_TOPIC else self.metrics).append(json.loads(r.value))

    async def until(self, done: Callable[[], bool], timeout_s: float, what: str) -> None:
        try:
            async with asyncio.timeout(timeout_s):
                while not done():
                    await asyncio.sleep(0.2)
        except TimeoutError:
            pytest.fail(f"timed out waiting for {what}")


async def test_two_replicas_on_four_partitions_report_every_incident_once_across_a_rebalance(
    topics_ready: str, redis_url: str, tmp_path: Path
) -> None:
    """Each segment is scored by the one replica holding its partition; when a replica leaves,
    its segments go on in the other from the state it saved: no new reference to fill, open
    incidents neither lost nor opened twice. The global segment is scored once, by one replica."""
    uid = uuid.uuid4().hex[:6]
    topic, global_topic = f"drift-in-{uid}", f"drift-global-{uid}"
    await ensure_topics(topics_ready, {topic: 4, global_topic: 1})
    tenants = _tenants_on_every_partition(4)
    segments = {f"{t}/ask" for t in tenants}
    env = {"KAFKA_BOOTSTRAP": topics_ready, "REQUESTS_TOPIC": topic, "GLOBAL_TOPIC": global_topic,
           "APP_ID": f"drift-scale-{uid}", "WINDOW_SIZE": "50", "REFERENCE_SIZE": "300", "BATCH_SIZE": "100",
           "BATCH_SECONDS": "1", "SEGMENT_BY": "tenant,prompt", "REDIS_URL": redis_url, "BASELINE_POLL_S": "1",
           "RECENT_SNAPSHOT_S": "1", "HF_HUB_OFFLINE": "1"}
    rng = random.Random(7)
    jobs = [_start_job(env, tmp_path / "a.log"), _start_job(env, tmp_path / "b.log")]
    try:
        async with _Records(topics_ready) as seen:
            # A trickle until both replicas score segments (both joined the group).
            sent = 0
            for _ in range(60):
                await _produce_keyed(topics_ready, topic, {t: _texts(rng, 5, 0.0) for t in tenants}, sent)
                sent += 5
                if len({r["worker"] for r in seen.metrics if r["segment"] in segments}) == 2:
                    break
                await asyncio.sleep(1.5)
            workers = {r["worker"] for r in seen.metrics if r["segment"] in segments}
            assert len(workers) == 2, "both replicas hold partitions"
            # References fill, then a few stationary windows everywhere.
            await _produce_keyed(topics_ready, topic, {t: _texts(rng, 300 + 200 - sent, 0.0) for t in tenants}, sent)
            sent = 500
            await seen.until(lambda: all(sum(1 for r in seen.metrics if r["segment"] == s and "detectors" in r) >= 3
                                         for s in segments), 240, "stationary windows on every segment")
            scored_by = {s: {r["worker"] for r in seen.metrics if r["segment"] == s and "detectors" in r}
                         for s in segments}
            assert all(len(w) == 1 for w in scored_by.values()), f"one replica per segment: {scored_by}"
            leaving_pid = jobs[0].pid
            moved = {s for s, w in scored_by.items() if next(iter(w)).endswith(f":{leaving_pid}")}
            assert moved and moved != segments, scored_by
            last_index = {s: max(r["window"]["index"] for r in seen.metrics if r["segment"] == s and "window" in r)
                          for s in moved}

            # A new topic starts; then one replica leaves and the other takes its segments over.
            await _produce_keyed(topics_ready, topic, {t: _texts(rng, 150, 0.35) for t in tenants}, sent)
            sent += 150
            await seen.until(lambda: all(max(r["window"]["index"] for r in seen.metrics
                                             if r["segment"] == s and "window" in r) >= 6 for s in moved),
                             120, "drifted windows before the move")
            await asyncio.to_thread(_stop_job, jobs[0])
            mark = len(seen.metrics)  # what comes after the move
            await _produce_keyed(topics_ready, topic, {t: _texts(rng, 450, 0.35) for t in tenants}, sent)

            def all_opened() -> bool:
                return segments <= {i["segment"] for i in seen.incidents if i["state"] == "OPEN"}

            await seen.until(all_opened, 240, "an incident on every segment")
            # Each segment, not a count of records: one busy segment must not stand in for another.
            await seen.until(lambda: all(any(r["segment"] == s and r["worker"].endswith(f":{jobs[1].pid}")
                                             and r.get("window", {}).get("index", 0) >= 14 for r in seen.metrics)
                                         for s in segments),
                             240, "every segment scored to the end")
    finally:
        for job in jobs:
            await asyncio.to_thread(_stop_job, job)

    mine = [i for i in seen.incidents if i["segment"] in segments or (i["segment"] == "*" and i["worker"] in workers)]
    opened = [i["incident_id"] for i in mine if i["state"] == "OPEN"]
    assert len(opened) == len(set(opened)), "an incident opened once"
    for s in segments | {"*"}:
        for detector in {i["detector"] for i in mine if i["segment"] == s}:
            states = [i["state"] for i in mine if i["segment"] == s and i["detector"] == detector]
            # Never opened again while open: OPEN, (UPDATE...), CLOSED, OPEN, ...
            is_open = False
            for state in states:
                assert not (state == "OPEN" and is_open), f"{s} {detector}: {states}"
                is_open = state in ("OPEN", "UPDATE")
    survivor = f":{jobs[1].pid}"
    for s in moved:
        after = [r for r in seen.metrics[mark:] if r["segment"] == s and r["worker"].endswith(survivor)]
        assert after, f"{s} went on in the other replica"
        assert all(r["reference"]["status"] != "filling" for r in after), "taken over, not learnt again"
        assert min(r["window"]["index"] for r in after if "window" in r) > last_index[s], "its windows go on"
    global_workers = {r["worker"] for r in seen.metrics if r["segment"] == "*" and r["worker"] in workers}
    assert len(global_workers) <= 2 and all(
        len({r["worker"] for r in seen.metrics if r["segment"] == "*" and r.get("window", {}).get("index") == n
             and r["worker"] in workers}) <= 1 for n in range(1, 40)), "the global segment scored once per window"
