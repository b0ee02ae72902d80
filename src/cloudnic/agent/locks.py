"""Per-attachment locks and the audit's gate, for the agent's request threads.

CNI verbs run end to end on request threads (see ``server.py``): ``KeyedLocks`` lets one
operation at a time work on a key, different keys in parallel; ``Gate`` lets CNI verbs
pass shared while an audit repair (on the event loop) holds it exclusive.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Iterator

EXCLUSIVE_POLL_S = 0.005     # how often an exclusive holder looks whether the shared ones are gone


class _Entry:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.users = 0


class KeyedLocks:
    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, _Entry] = {}

    @contextlib.contextmanager
    def hold(self, key: str) -> Iterator[None]:
        with self._guard:
            entry = self._locks.get(key)
            if entry is None:
                entry = self._locks[key] = _Entry()
            entry.users += 1
        try:
            with entry.lock:
                yield
        finally:
            self._leave(key, entry)

    @contextlib.contextmanager
    def try_hold(self, key: str) -> Iterator[bool]:
        """Hold ``key`` only if nobody holds or waits for it: yields True (held) or False (busy;
        nothing taken). Never waits, so a thread holding another key may use it."""
        with self._guard:
            if key in self._locks:
                entry = None
            else:
                entry = self._locks[key] = _Entry()
                entry.users = 1
                entry.lock.acquire()
        if entry is None:
            yield False
            return
        try:
            yield True
        finally:
            entry.lock.release()
            self._leave(key, entry)

    def _leave(self, key: str, entry: _Entry) -> None:
        """One user fewer; the last one takes the key's entry away."""
        with self._guard:
            entry.users -= 1
            if entry.users == 0:
                del self._locks[key]

    def busy(self, key: str) -> bool:
        """True while an operation on ``key`` holds or waits for its lock."""
        with self._guard:
            return key in self._locks

    def __len__(self) -> int:
        with self._guard:
            return len(self._locks)


class Gate:
    """Shared/exclusive gate: CNI operations pass shared (request threads); an audit repair
    runs exclusive (event loop), after the operations in flight have finished and before
    new ones start."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._open = True
        self._active = 0
        self._exclusive = asyncio.Lock()

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            while not self._open:
                self._cond.wait()
            self._active += 1
        try:
            yield
        finally:
            with self._cond:
                self._active -= 1

    @property
    def active(self) -> int:
        with self._cond:
            return self._active

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        async with self._exclusive:
            with self._cond:
                self._open = False
            try:
                while self.active:                # the loop must not block: look again shortly
                    await asyncio.sleep(EXCLUSIVE_POLL_S)
                yield
            finally:
                with self._cond:
                    self._open = True
                    self._cond.notify_all()
