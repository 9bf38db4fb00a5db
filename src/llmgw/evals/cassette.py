"""Cassettes: recorded provider replies per prompt version and provider, so suites run offline.

    evals/<prompt>/cassettes/<vN>/<provider>.jsonl    one line per distinct request, sorted by key

A request's key hashes everything the provider sees (model, system prompt, messages, sampling):
a new prompt version renders different text, misses, and must be recorded (``--record``) before
it can be evaluated offline. A key holds one reply per recorded repeat; replay hands them out in
order, so ``--repeat N`` replays N independent recordings. Every reply carries its ``source``
(``llmgw.evals.provenance``): a real model, or a scripted stand-in.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from llmgw.domain import Message, Output, Sampling
from llmgw.evals.provenance import UNKNOWN
from llmgw.kit.errors import NotFound
from llmgw.services.router.providers import Provider, ProviderReply, StreamPiece

__all__ = ["Cassette", "CassetteProvider", "request_key"]


def _request(model: str, system: str, messages: tuple[Message, ...], sampling: Sampling) -> dict[str, Any]:
    return {"model": model, "system": system, "messages": [{"role": m.role, "content": m.content} for m in messages],
            "sampling": {"temperature": sampling.temperature, "max_tokens": sampling.max_tokens,
                         "top_p": sampling.top_p, "stop": list(sampling.stop)}}


def request_key(provider: str, request: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps([provider, request], sort_keys=True).encode()).hexdigest()[:32]


class Cassette:
    def __init__(self, path: Path, provider: str) -> None:
        self.path = path
        self.provider = provider
        self._entries: dict[str, dict[str, Any]] = {}
        if path.exists():
            for line in path.read_text().splitlines():
                if line.strip():
                    entry = json.loads(line)
                    self._entries[entry["key"]] = entry
        self._served: defaultdict[str, int] = defaultdict(int)
        self._recorded: dict[str, dict[str, Any]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def replay(self, key: str) -> tuple[ProviderReply, str] | None:
        """The next recorded reply for ``key`` and the label of its source."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        replies = entry["replies"]
        n = self._served[key]
        self._served[key] += 1
        reply = dict(replies[n % len(replies)])
        source = reply.pop("source", None) or {}
        return ProviderReply(**reply), str(source.get("label", UNKNOWN))

    def record(self, key: str, request: dict[str, Any], reply: ProviderReply, source: dict[str, str]) -> None:
        entry = self._recorded.setdefault(key, {"key": key, "request": request, "replies": []})
        entry["replies"].append({**asdict(reply), "source": source})

    def save(self) -> None:
        """Write what this run recorded (requests the suite no longer makes are dropped)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lines = [json.dumps(self._recorded[k], sort_keys=True, ensure_ascii=False) for k in sorted(self._recorded)]
        self.path.write_text("".join(line + "\n" for line in lines))


class CassetteProvider:
    """A ``Provider`` that replays a cassette, or (``inner`` given) calls the real provider and
    records with ``source``. It sits where the SDK adapter sits, so the router's code path is the
    gateway's. ``sources`` counts the source of every reply it handed out."""

    def __init__(self, cassette: Cassette, inner: Provider | None = None,
                 source: dict[str, str] | None = None) -> None:
        if inner is not None and source is None:
            raise ValueError("a recording needs its source")
        self.name = cassette.provider
        self.cassette = cassette
        self._inner = inner
        self._source = source or {}
        self.sources: Counter[str] = Counter()

    async def complete(
        self, model: str, system: str, messages: tuple[Message, ...], sampling: Sampling, timeout_s: float,
        output: Output = Output(),
    ) -> ProviderReply:
        request = _request(model, system, messages, sampling)
        key = request_key(self.name, request)
        if self._inner is not None:
            reply = await self._inner.complete(model, system, messages, sampling, timeout_s, output=output)
            self.cassette.record(key, request, reply, self._source)
            self.sources[self._source["label"]] += 1
            return reply
        recorded = self.cassette.replay(key)
        if recorded is None:
            raise NotFound(f"no recording in {self.cassette.path} for this {self.name} request (key {key}); "
                           "record it with `llmgw eval run --record`")
        reply, label = recorded
        self.sources[label] += 1
        return reply

    async def stream(
        self, model: str, system: str, messages: tuple[Message, ...], sampling: Sampling, timeout_s: float,
        output: Output = Output(),
    ) -> AsyncIterator[StreamPiece]:
        reply = await self.complete(model, system, messages, sampling, timeout_s, output)
        yield StreamPiece(delta=reply.text)
        yield StreamPiece(done=True, input_tokens=reply.input_tokens, output_tokens=reply.output_tokens,
                          finish_reason=reply.finish_reason)

    async def close(self) -> None:
        if self._inner is not None:
            await self._inner.close()
