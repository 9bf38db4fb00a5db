from __future__ import annotations

import numpy as np
import pytest

from llmgw.events.v1 import events_pb2
from llmgw.gateway.v1 import gateway_pb2
from llmgw.services.drift.app import GLOBAL_SEGMENT, Batch, process_window
from llmgw.services.drift.detector import DetectorSettings, DriftDetector
from llmgw.services.drift.model import CUSUM, LENGTH
from llmgw.services.drift.stats import (
    assign,
    centroid,
    centroid_cosine_distance,
    fit_cells,
    g_test,
    mean_max_similarity,
    mmd2,
)
from llmgw.services.drift.text import input_text, segment_of

RNG = np.random.default_rng(0)


def _cluster(center: np.ndarray, n: int, noise: float = 0.05) -> np.ndarray:
    return (center + noise * RNG.standard_normal((n, center.size))).astype(np.float32)


A = np.eye(16, dtype=np.float32)[0]
B = np.eye(16, dtype=np.float32)[1]


class TestStats:
    def test_same_topic_is_close_and_new_topic_is_far(self) -> None:
        ref = _cluster(A, 50)
        same = centroid_cosine_distance(ref, _cluster(A, 20))
        moved = centroid_cosine_distance(ref, _cluster(B, 20))
        assert same < 0.05 < 0.5 < moved

    def test_novelty_lowers_nearest_similarity(self) -> None:
        ref = _cluster(A, 50)
        assert mean_max_similarity(ref, _cluster(A, 10)) > 0.9 > 0.3 > mean_max_similarity(ref, _cluster(B, 10))

    def test_centroid_rejects_empty(self) -> None:
        with pytest.raises(ValueError):
            centroid(np.zeros((0, 3), dtype=np.float32))


class _Onehot:
    """Embeds a text onto axis 0 or 1 by its first word: a deterministic stand-in for the model seam."""

    def encode(self, texts: list[str]) -> np.ndarray:
        return np.stack([A if "weather" in t else B for t in texts]).astype(np.float32)


SEG = "acme/default/summarize/production"


def _event(i: int, text: str, prompt: str = "summarize") -> bytes:
    return events_pb2.RequestEvent(request_id=f"r{i}", tenant="acme", route="default", prompt=prompt,
                                   label="production", variables={"text": text}, time=float(i)).SerializeToString()


def _batch(det: DriftDetector, embedder: object = None) -> Batch:
    return Batch(embedder or _Onehot(), det)  # type: ignore[arg-type]


class TestWindowProcessing:
    def test_reference_fills_then_windows_per_segment_and_global(self) -> None:
        det = DriftDetector(DetectorSettings(reference_size=8, window=4, simulations=200))
        filling = process_window([_event(i, "weather") for i in range(4)], _batch(det))
        assert {r["segment"] for r in filling} == {GLOBAL_SEGMENT, SEG}
        assert all(r["reference"] == {"status": "filling", "have": 4, "need": 8} for r in filling)
        process_window([_event(i, "weather") for i in range(4, 8)], _batch(det))
        ref = det.reference(SEG)
        assert ref is not None and ref.status == "provisional" and ref.id.startswith(SEG + "@")
        recs = process_window([_event(i, "weather") for i in range(8, 12)], _batch(det))
        windows = [r for r in recs if r["type"] == "window"]
        assert {r["segment"] for r in windows} == {GLOBAL_SEGMENT, SEG}
        assert all(set(r["detectors"]) == {"topic@4", "mmd@4", CUSUM, LENGTH} and r["calibration_id"].startswith("cal-")
                   for r in windows)

    def test_undecodable_records_are_skipped_not_fatal(self) -> None:
        det = DriftDetector(DetectorSettings(reference_size=4, window=2, simulations=200))
        recs = process_window([b"\xff\x00garbage", _event(1, "weather"), _event(2, "weather")], _batch(det))
        assert recs and recs[0]["reference"]["have"] == 2

    def test_text_and_segment_extraction(self) -> None:
        ev = events_pb2.RequestEvent(tenant="t", messages=[gateway_pb2.Message(role="system", content="s"),
                                                           gateway_pb2.Message(role="user", content="q")])
        assert input_text(ev) == "q" and segment_of(ev) == "t/-/-/-"
        ev = events_pb2.RequestEvent(tenant="t", route="r", prompt="p", label="production",
                                     variables={"text": "hello", "lang": "en"})
        assert segment_of(ev) == "t/r/p/production" and segment_of(ev, ("prompt", "label")) == "p/production"
        assert input_text(ev) == "lang: en\ntext: hello" and input_text(ev, {"p": ["text"]}) == "text: hello"

    def test_the_users_text_parts_are_embedded_not_images_or_tool_results(self) -> None:
        user = gateway_pb2.Message(role="user", parts=[
            gateway_pb2.ContentPart(type="text", text="what is "),
            gateway_pb2.ContentPart(type="image", media_type="image/png", data="sha256:abc"),
            gateway_pb2.ContentPart(type="text", text="this?")])
        ev = events_pb2.RequestEvent(tenant="t", messages=[user])
        assert input_text(ev) == "what is this?"
        after_tool = [user, gateway_pb2.Message(role="assistant", tool_calls=[gateway_pb2.ToolCall(id="c", name="f")]),
                      gateway_pb2.Message(role="tool", tool_call_id="c", content="42")]
        assert input_text(events_pb2.RequestEvent(tenant="t", messages=after_tool)) == "what is this?"


class TestTopicMix:
    """k-means cells + novelty cell + G-test, on synthetic embeddings with known topics."""

    @staticmethod
    def _topics(rng: np.random.Generator, centers: list[np.ndarray], weights: list[float], n: int) -> np.ndarray:
        idx = rng.choice(len(centers), size=n, p=weights)
        return np.stack([centers[i] + 0.05 * rng.standard_normal(centers[i].size) for i in idx]).astype(np.float32)

    def setup_method(self) -> None:
        self.rng = np.random.default_rng(1)
        self.centers = [np.eye(16, dtype=np.float32)[i] for i in range(4)]
        self.ref = self._topics(self.rng, self.centers[:3], [0.5, 0.3, 0.2], 300)
        self.cells = fit_cells(self.ref, k=3, seed=0)

    def test_stationary_windows_rarely_alarm(self) -> None:
        ps = [g_test(self.cells.reference_counts,
                     np.bincount(assign(self.cells, self._topics(self.rng, self.centers[:3], [0.5, 0.3, 0.2], 50)),
                                 minlength=4))[1] for _ in range(40)]
        assert sum(p < 0.001 for p in ps) <= 1

    def test_a_new_topic_lands_in_the_novelty_cell_and_alarms(self) -> None:
        win = self._topics(self.rng, self.centers, [0.4, 0.2, 0.2, 0.2], 50)  # 20% of a new topic
        counts = np.bincount(assign(self.cells, win), minlength=4)
        _, p, contrib = g_test(self.cells.reference_counts, counts)
        assert p < 1e-6 and counts[3] >= 5 and int(np.argmax(contrib)) == 3

    def test_a_shifted_mix_of_known_topics_alarms_and_names_the_cell(self) -> None:
        win = self._topics(self.rng, self.centers[:3], [0.1, 0.1, 0.8], 60)
        counts = np.bincount(assign(self.cells, win), minlength=4)
        _, p, contrib = g_test(self.cells.reference_counts, counts)
        grown = int(np.argmax(contrib))
        assert p < 1e-6 and counts[grown] == counts[:3].max()

    def test_cluster_ids_are_stable_across_refits(self) -> None:
        again = fit_cells(self.ref, k=3, seed=0)
        assert np.allclose(again.centroids, self.cells.centroids)

    def test_mmd_grows_with_a_diffuse_shift(self) -> None:
        same = mmd2(self.ref[:80], self._topics(self.rng, self.centers[:3], [0.5, 0.3, 0.2], 80))
        moved = mmd2(self.ref[:80], self._topics(self.rng, self.centers[:3], [0.5, 0.3, 0.2], 80) + 0.15)
        assert moved > 5 * max(same, 1e-4)


def test_guards_report_length_short_duplicate_and_script_changes() -> None:
    from llmgw.services.drift.stats import guards

    g = guards(["what is the weather like today"] * 1 + ["how do I reset my password please"],
               ["", "ok", "ok", "Привет, как дела?"])
    assert g["mean_length"]["delta"] < 0.5
    assert g["short_share"]["current"] == 0.75 and g["short_share"]["delta"] == 0.75
    assert g["duplicate_share"]["current"] == 0.25
    assert g["non_ascii_share"]["current"] > 0.5 and g["non_ascii_share"]["reference"] == 0


class TestHandoff:
    """A segment moving to another replica goes on from the state the first one left."""

    def test_a_segment_taken_over_keeps_its_reference_windows_and_history(self) -> None:
        settings = DetectorSettings(reference_size=8, window=4, simulations=200)
        first = DriftDetector(settings)
        for start in range(0, 16, 4):
            process_window([_event(i, "weather") for i in range(start, start + 4)], _batch(first))
        ref, state = first.reference(SEG), first.export_state(SEG)
        (recent,) = first.recent_samples({SEG})
        assert ref is not None and state is not None and state["windows"] == 2

        second = DriftDetector(settings)
        second.defer_new_segments = True
        quiet = process_window([_event(i, "weather") for i in range(16, 18)], _batch(second))
        assert [r for r in quiet if r["segment"] == SEG] == [], "nothing said before the state is looked up"
        replayed = second.adopt(ref, recent, state)  # the two inputs seen meanwhile are replayed
        assert second.reference(SEG) is not None and second.reference(SEG).id == ref.id  # type: ignore[union-attr]
        assert replayed == []  # half a window so far
        recs = process_window([_event(i, "weather") for i in range(18, 20)], _batch(second))
        (window,) = [r for r in recs if r["segment"] == SEG]
        assert window["window"]["index"] == 3 and window["reference"]["id"] == ref.id

    def test_a_segment_stays_quiet_while_another_agent_looks_it_up(self) -> None:
        """The requests agent and the global agent both sync: inputs may arrive after one sync
        took a new segment and before it adopted it. Until the store was asked, no "filling"
        record may say the segment starts over; a failed lookup is retried, not forgotten."""
        settings = DetectorSettings(reference_size=8, window=4, simulations=200)
        det = DriftDetector(settings)
        det.defer_new_segments = True
        assert [r for r in process_window([_event(0, "weather")], _batch(det)) if r["segment"] == SEG] == []
        taken = det.take_new_segments()  # another agent's sync is now looking it up
        assert SEG in taken
        more = process_window([_event(i, "weather") for i in range(1, 3)], _batch(det))
        assert [r for r in more if r["segment"] == SEG] == [], "said it was filling while being adopted"
        det.looked_up(taken, retry=True)  # the store did not answer
        assert det.take_new_segments() == taken, "looked up again at the next sync"
        det.looked_up(taken)  # nobody ran it: it fills here, and says so
        (filling,) = [r for r in process_window([_event(3, "weather")], _batch(det)) if r["segment"] == SEG]
        assert filling["reference"] == {"status": "filling", "have": 4, "need": 8}

    def test_forwarded_inputs_round_trip(self) -> None:
        import numpy as np

        from llmgw.services.drift.app import pack_inputs, unpack_inputs
        from llmgw.services.drift.model import Input

        items = [Input(np.array([0.5, -0.25, 1.0], dtype=np.float32), "t1", "r1", 2, 40, 1.5),
                 Input(np.array([0.0, 0.125, -1.0], dtype=np.float32), "t2", "r2", 0, 7, 2.5)]
        back, rate = unpack_inputs(pack_inputs(items, 0.5))
        assert rate == 0.5 and [(i.text, i.request_id, i.partition, i.offset, i.time) for i in back] == \
            [("t1", "r1", 2, 40, 1.5), ("t2", "r2", 0, 7, 2.5)]
        assert all(np.allclose(a.vector, b.vector, atol=1e-3) for a, b in zip(items, back, strict=True))
