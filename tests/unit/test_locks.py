"""KeyedLocks and Gate: the request threads' per-attachment serialisation and the audit's gate."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from cloudnic.agent.locks import Gate, KeyedLocks


def _threads(*targets) -> list[threading.Thread]:  # type: ignore[no-untyped-def]
    ts = [threading.Thread(target=t) for t in targets]
    for t in ts:
        t.start()
    return ts


def test_one_holder_per_key_and_keys_in_parallel() -> None:
    locks = KeyedLocks()
    events: list[str] = []
    guard = threading.Lock()

    def op(key: str, name: str) -> None:
        with locks.hold(key):
            with guard:
                events.append(f"{name}+")
            time.sleep(0.05)
            with guard:
                events.append(f"{name}-")

    ts = _threads(lambda: op("a", "a1"))
    time.sleep(0.01)
    ts += _threads(lambda: op("a", "a2"), lambda: op("b", "b1"))
    for t in ts:
        t.join(5)
    assert events.index("a1-") < events.index("a2+")          # one at a time on "a"
    assert events.index("b1+") < events.index("a1-")          # "b" beside it
    assert len(locks) == 0 and not locks.busy("a") and not locks.busy("b")


def test_busy_while_held_or_waited_for() -> None:
    locks = KeyedLocks()
    entered, leave = threading.Event(), threading.Event()

    def holder() -> None:
        with locks.hold("k"):
            entered.set()
            leave.wait(5)

    (t1,) = _threads(holder)
    assert entered.wait(5)
    assert locks.busy("k") and len(locks) == 1
    (t2,) = _threads(holder)                  # waits for the first
    time.sleep(0.02)
    assert locks.busy("k") and len(locks) == 1
    leave.set()
    t1.join(5)
    t2.join(5)
    assert not locks.busy("k") and len(locks) == 0


def test_an_error_inside_releases_the_key() -> None:
    locks = KeyedLocks()
    with pytest.raises(RuntimeError):
        with locks.hold("k"):
            raise RuntimeError("boom")
    assert not locks.busy("k")
    done = threading.Event()

    def again() -> None:
        with locks.hold("k"):
            done.set()

    (t,) = _threads(again)
    assert done.wait(2)
    t.join(2)


def test_gate_exclusive_waits_for_shared_in_flight_and_holds_new_ones() -> None:
    gate = Gate()
    events: list[str] = []
    guard = threading.Lock()
    in_shared = threading.Event()

    def shared(name: str, hold: float) -> None:
        with gate.shared():
            with guard:
                events.append(f"{name}+")
            in_shared.set()
            time.sleep(hold)
            with guard:
                events.append(f"{name}-")

    async def exclusive() -> None:
        async with gate.exclusive():
            with guard:
                events.append("X+")
            second = threading.Thread(target=shared, args=("s2", 0))    # arrives while X holds the gate
            second.start()
            await asyncio.sleep(0.05)
            with guard:
                events.append("X-")
        await asyncio.get_running_loop().run_in_executor(None, second.join, 5)

    (s1,) = _threads(lambda: shared("s1", 0.1))
    assert in_shared.wait(5)
    asyncio.run(asyncio.wait_for(exclusive(), 5))
    s1.join(5)
    assert events.index("s1-") < events.index("X+")       # waited for the one in flight
    assert events.index("X-") < events.index("s2+")       # and kept the new one out
    assert gate.active == 0


def test_gate_shared_from_many_threads_then_exclusive_at_once() -> None:
    gate = Gate()

    def shared() -> None:
        with gate.shared():
            time.sleep(0.01)

    for t in _threads(*([shared] * 8)):
        t.join(5)
    assert gate.active == 0

    async def exclusive() -> None:
        async with gate.exclusive():
            pass

    asyncio.run(asyncio.wait_for(exclusive(), 1))


def test_try_hold_takes_a_free_key_and_never_waits_for_a_busy_one() -> None:
    locks = KeyedLocks()
    with locks.try_hold("k") as held:
        assert held and locks.busy("k")
        blocked: list[bool] = []

        def other() -> None:                    # another thread: busy, answered at once
            t0 = time.monotonic()
            with locks.try_hold("k") as h:
                blocked.append(h)
            blocked.append(time.monotonic() - t0 < 0.5)

        (t,) = _threads(other)
        t.join(2)
        assert blocked == [False, True]
        assert locks.busy("k")                  # the refusal took nothing away
    assert not locks.busy("k") and len(locks) == 0
    with locks.hold("k"):                       # and the key is free for a normal holder
        pass
    with pytest.raises(RuntimeError):
        with locks.try_hold("k") as held:
            assert held
            raise RuntimeError("boom")
    assert not locks.busy("k")
