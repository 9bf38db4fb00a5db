"""The HTTP face against a direct SDK call, side by side in one run: the ``openai`` SDK calling
the fake provider directly vs through llmgw's OpenAI-compatible HTTP API (a miss, and a hit), as
deployed (``llmgw up``: every service its own process). Serial p50/p99 interleaved round-robin
(bench/_harness.py), then throughput at concurrency 32 for each path, one after the other.

    python -m bench.http [--n 300] [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import openai

from bench._harness import LIMITS, interleave, print_table, summary
from llmgw.kit.embedded import free_port
from llmgw.kit.main import run as run_loop
from llmgw.up import start_system

Call = Callable[[int], Awaitable[object]]
TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


async def _throughput(call: Call, seconds: float, concurrency: int = 32) -> float:
    done = 0
    end = time.monotonic() + seconds

    async def worker(w: int) -> None:
        nonlocal done
        i = 0
        while time.monotonic() < end:
            await call(w * 1_000_000 + i)
            i += 1
            done += 1

    start = time.monotonic()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return done / (time.monotonic() - start)


async def run(n: int, seconds: float) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    system = await start_system(Path(tempfile.mkdtemp(prefix="llmgw-bench-")), ingress_port=free_port(),
                                with_drift=False, limits=LIMITS, api_keys="bench-key=bench")
    try:
        assert system.fake_url is not None, "the bench needs the fake providers (unset the real API keys)"
        direct = openai.AsyncOpenAI(api_key="x", base_url=f"{system.fake_url}/v1", max_retries=0)
        gateway = openai.AsyncOpenAI(api_key="bench-key", base_url=f"http://{system.http_addr}/v1", max_retries=0)

        def ask(client: openai.AsyncOpenAI, model: str, text: Callable[[int], str], **extra: object) -> Call:
            async def call(i: int) -> object:
                return await client.chat.completions.create(
                    model=model, messages=[{"role": "user", "content": text(i)}], temperature=0,
                    max_completion_tokens=512, **extra)  # type: ignore[call-overload]
            return call

        paths = {
            "direct": ask(direct, "gpt-4o-mini", lambda i: f"question {i}"),
            "http miss": ask(gateway, "default", lambda i: f"question {i}",
                             extra_body={"llmgw": {"cache_mode": "bypass"}}),
            "http hit": ask(gateway, "default", lambda i: "the same question"),
            # A request with a tool the model calls: the dialect translation and tool-call parsing
            # on both sides, against the same call made directly.
            "direct + tool": ask(direct, "gpt-4o-mini", lambda i: f"city {i}", tools=[TOOL]),
            "http miss + tool": ask(gateway, "default", lambda i: f"city {i}", tools=[TOOL],
                                    extra_body={"llmgw": {"cache_mode": "bypass"}}),
            "http hit + tool": ask(gateway, "default", lambda i: "the same city", tools=[TOOL]),
        }
        await paths["http hit"](0)  # fill the entries
        await paths["http hit + tool"](0)
        await asyncio.sleep(0.2)
        times = await interleave(paths, n)
        rates = {name: await _throughput(call, seconds) for name, call in paths.items()}
        await direct.close()
        await gateway.close()
    finally:
        system.stop()
    return summary(times), rates


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    out: list[tuple[dict[str, dict[str, float]], dict[str, float]]] = []

    async def go() -> None:
        out.append(await run(args.n, args.seconds))

    run_loop(go())
    res, rates = out[0]
    plain = {k: v for k, v in res.items() if "tool" not in k}
    print_table("path (ratios x direct)", plain, "direct")
    print()
    print_table("path (x direct + tool)", {k: v for k, v in res.items() if "tool" in k}, "direct + tool")
    print(f"\n{'throughput at concurrency 32':<28} {'rps':>8} {'ratio':>8}  (tool paths x direct + tool)")
    for name, rps in rates.items():
        base = rates["direct + tool" if "tool" in name else "direct"]
        print(f"{name:<28} {rps:>8.0f} {rps / base:>8.2f}")


if __name__ == "__main__":
    main()
