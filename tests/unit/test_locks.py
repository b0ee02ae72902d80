"""KeyedLocks and Gate: the agent's per-attachment serialisation and the audit's exclusive gate."""

from __future__ import annotations

import asyncio

import pytest

from cloudnic.agent.locks import Gate, KeyedLocks


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_one_holder_per_key_and_keys_in_parallel() -> None:
    async def main() -> list[str]:
        locks = KeyedLocks()
        events: list[str] = []

        async def op(key: str, name: str) -> None:
            async with locks.hold(key):
                events.append(f"{name}+")
                await asyncio.sleep(0.01)
                events.append(f"{name}-")

        await asyncio.gather(op("a", "a1"), op("a", "a2"), op("b", "b1"))
        assert len(locks) == 0 and not locks.busy("a") and not locks.busy("b")
        return events

    events = run(main())
    # a1 and a2 never overlap; b1 runs beside a1
    assert events.index("a1-") < events.index("a2+")
    assert events.index("b1+") < events.index("a1-")


def test_busy_while_held_or_waited_for() -> None:
    async def main() -> None:
        locks = KeyedLocks()
        entered = asyncio.Event()
        leave = asyncio.Event()

        async def holder() -> None:
            async with locks.hold("k"):
                entered.set()
                await leave.wait()

        t1 = asyncio.create_task(holder())
        await entered.wait()
        assert locks.busy("k") and len(locks) == 1
        t2 = asyncio.create_task(holder())       # waits for the first
        await asyncio.sleep(0)
        leave.set()
        await asyncio.gather(t1, t2)
        assert not locks.busy("k") and len(locks) == 0

    run(main())


def test_a_waiter_cancelled_leaves_no_trace_and_the_holder_unharmed() -> None:
    async def main() -> None:
        locks = KeyedLocks()
        entered = asyncio.Event()
        leave = asyncio.Event()

        async def holder() -> None:
            async with locks.hold("k"):
                entered.set()
                await leave.wait()

        t1 = asyncio.create_task(holder())
        await entered.wait()
        waiter = asyncio.create_task(holder())
        await asyncio.sleep(0.01)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert locks.busy("k")                  # the holder still holds it
        leave.set()
        await t1
        assert not locks.busy("k")
        async with locks.hold("k"):             # and it can be taken again at once
            assert locks.busy("k")
        assert len(locks) == 0

    run(main())


def test_an_error_inside_releases_the_key() -> None:
    async def main() -> None:
        locks = KeyedLocks()
        with pytest.raises(RuntimeError):
            async with locks.hold("k"):
                raise RuntimeError("boom")
        assert not locks.busy("k")
        await asyncio.wait_for(_take(locks, "k"), 1)

    run(main())


async def _take(locks: KeyedLocks, key: str) -> None:
    async with locks.hold(key):
        pass


def test_gate_exclusive_waits_for_shared_in_flight_and_holds_new_ones() -> None:
    async def main() -> list[str]:
        gate = Gate()
        events: list[str] = []
        in_shared = asyncio.Event()

        async def shared(name: str, hold: float) -> None:
            async with gate.shared():
                events.append(f"{name}+")
                in_shared.set()
                await asyncio.sleep(hold)
                events.append(f"{name}-")

        async def exclusive() -> None:
            async with gate.exclusive():
                events.append("X+")
                await asyncio.sleep(0.01)
                events.append("X-")

        s1 = asyncio.create_task(shared("s1", 0.03))
        await in_shared.wait()
        x = asyncio.create_task(exclusive())
        await asyncio.sleep(0.005)
        s2 = asyncio.create_task(shared("s2", 0))     # arrives while the exclusive one waits
        await asyncio.gather(s1, x, s2)
        return events

    events = run(main())
    assert events.index("s1-") < events.index("X+")   # waited for the one in flight
    assert events.index("X-") < events.index("s2+")   # and kept the new one out


def test_gate_shared_is_reentrant_across_tasks() -> None:
    async def main() -> None:
        gate = Gate()

        async def shared() -> None:
            async with gate.shared():
                await asyncio.sleep(0.005)

        await asyncio.gather(*(shared() for _ in range(5)))
        async with gate.exclusive():            # idle again: enters at once
            pass

    asyncio.run(asyncio.wait_for(main(), 2))
