"""``llmgw events tail`` and ``replay`` against the real broker."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from llmgw.cli import main as cli
from llmgw.stack import Stack
from tests.helpers import Client, prompt_request, read_topic

pytestmark = pytest.mark.integration


async def test_tail_filters_and_replay_refeeds_a_window(
    stack: Stack, topics_ready: str, capsys: pytest.CaptureFixture[str]
) -> None:
    client = Client(stack.ingress.address)
    start = time.time() - 1
    ok = await client.complete(prompt_request("tail me"))
    bad = None
    try:
        await client.complete(prompt_request("x", label="nope"))
    except Exception as exc:  # NOT_FOUND, published as a response event
        bad = exc
    await client.close()
    assert bad is not None
    await read_topic(topics_ready, "llm.responses", {ok.request_id})
    await asyncio.sleep(0.5)
    end = time.time() + 1
    loop = asyncio.get_running_loop()

    def run(*argv: str) -> int:
        return cli(list(argv))

    rc = await loop.run_in_executor(None, run, "events", "tail", "--bootstrap", topics_ready, "--topic",
                                    "llm.responses", "--from-beginning", "--status", "NOT_FOUND", "--timeout", "5")
    lines = [json.loads(ln) for ln in capsys.readouterr().out.splitlines() if ln.startswith("{")]
    assert rc == 0 and lines and all(ev["status"] == "NOT_FOUND" for ev in lines)
    target = f"llm.requests.replay.{int(time.time())}"
    rc = await loop.run_in_executor(None, run, "events", "replay", "--bootstrap", topics_ready,
                                    "--from", str(start), "--to", str(end), "--to-topic", target)
    assert rc == 0 and "replayed" in capsys.readouterr().out
    replayed = await read_topic(topics_ready, target, {ok.request_id})
    assert ok.request_id in replayed
