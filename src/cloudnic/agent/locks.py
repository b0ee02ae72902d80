"""Per-attachment locks: one operation at a time per key, different keys in parallel.

Both are plain async context managers (``__aenter__``/``__aexit__``), not generator-based
ones: they sit on every CNI request's path.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class KeyedLocks:
    def __init__(self) -> None:
        self._locks: dict[str, _Entry] = {}

    def hold(self, key: str) -> _Held:
        return _Held(self._locks, key)

    def busy(self, key: str) -> bool:
        """True while an operation on ``key`` holds or waits for its lock."""
        return key in self._locks

    def __len__(self) -> int:
        return len(self._locks)


class _Entry:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


class _Held:
    __slots__ = ("_entry", "_key", "_locked", "_locks")

    def __init__(self, locks: dict[str, _Entry], key: str) -> None:
        self._locks, self._key = locks, key
        self._entry: _Entry | None = None
        self._locked = False

    async def __aenter__(self) -> None:
        entry = self._locks.get(self._key)
        if entry is None:
            entry = self._locks[self._key] = _Entry()
        entry.users += 1
        self._entry = entry
        try:
            await entry.lock.acquire()
        except BaseException:                   # cancelled while waiting: no longer a user
            self._leave(entry)
            raise
        self._locked = True

    async def __aexit__(self, *exc: object) -> None:
        entry = self._entry
        if entry is not None:
            if self._locked:
                entry.lock.release()
                self._locked = False
            self._leave(entry)

    def _leave(self, entry: _Entry) -> None:
        self._entry = None
        entry.users -= 1
        if entry.users <= 0 and self._locks.get(self._key) is entry:
            del self._locks[self._key]


class Gate:
    """Shared/exclusive gate: CNI operations pass shared; an audit repair runs exclusive,
    after the operations in flight have finished and before new ones start."""

    def __init__(self) -> None:
        self._open = asyncio.Event()
        self._open.set()
        self._active = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._exclusive = asyncio.Lock()
        self._shared = _Shared(self)

    def shared(self) -> _Shared:
        return self._shared

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        async with self._exclusive:
            self._open.clear()
            try:
                await self._idle.wait()
                yield
            finally:
                self._open.set()


class _Shared:
    """``async with gate.shared():`` — reusable (it keeps no state of its own)."""

    __slots__ = ("_gate",)

    def __init__(self, gate: Gate) -> None:
        self._gate = gate

    async def __aenter__(self) -> None:
        g = self._gate
        if not g._open.is_set():
            await g._open.wait()
        g._active += 1
        g._idle.clear()

    async def __aexit__(self, *exc: object) -> None:
        g = self._gate
        g._active -= 1
        if g._active == 0:
            g._idle.set()
