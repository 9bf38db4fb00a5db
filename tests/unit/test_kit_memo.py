from __future__ import annotations

import asyncio

from llmgw.kit.memo import Memo
from llmgw.kit.tasks import Deferred


def test_a_full_memo_drops_its_oldest_entry() -> None:
    memo: Memo[str, int] = Memo(2)
    memo.put("a", 1)
    memo.put("b", 2)
    memo.put("a", 10)  # an update takes no room
    assert len(memo) == 2 and memo.get("a") == 10
    memo.put("c", 3)
    assert memo.get("a") is None and memo.get("b") == 2 and memo.get("c") == 3


def test_a_memo_of_size_zero_keeps_nothing() -> None:
    memo: Memo[str, int] = Memo(0)
    memo.put("a", 1)
    assert memo.get("a") is None and len(memo) == 0


async def test_deferred_calls_run_together_in_order_after_the_delay() -> None:
    ran: list[int] = []
    deferred = Deferred(0.05)
    for i in range(3):
        deferred.call(ran.append, i)
    await asyncio.sleep(0.01)
    assert ran == []  # not on the next loop turn: the reply goes first
    await asyncio.sleep(0.1)
    assert ran == [0, 1, 2]


async def test_a_failing_call_does_not_stop_the_others() -> None:
    ran: list[str] = []
    deferred = Deferred(0)

    def boom() -> None:
        raise RuntimeError("bookkeeping bug")

    deferred.call(ran.append, "before")
    deferred.call(boom)
    deferred.call(ran.append, "after")
    await asyncio.sleep(0.01)
    assert ran == ["before", "after"]


async def test_flush_runs_what_waits_at_once_and_later_calls_start_a_new_round() -> None:
    ran: list[str] = []
    deferred = Deferred(10)
    deferred.call(ran.append, "a")
    deferred.flush()
    assert ran == ["a"]
    deferred.call(lambda: deferred.call(ran.append, "scheduled by a call"))
    deferred.flush()
    assert ran == ["a"]  # scheduled during a flush: the next round
    deferred.flush()
    assert ran == ["a", "scheduled by a call"]
