"""A gate in front of a dataplane module's ``create_veth``: each call announces itself and
waits until the test opens the gate, then makes the veth for real. Lets a test hold plugs
at the moment their veth is being made (to see what runs beside them)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

import pytest

WAIT_S = 10.0


class VethGate:
    def __init__(self, real: Any) -> None:
        self._real = real
        self._arrived = threading.Semaphore(0)
        self._open = threading.Event()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self._arrived.release()
        self._open.wait(WAIT_S)
        return self._real(*args, **kwargs)

    def arrived(self, n: int) -> bool:
        """True once n calls are waiting at (or went through) the gate, within WAIT_S."""
        return all(self._arrived.acquire(timeout=WAIT_S) for _ in range(n))

    def open(self) -> None:
        self._open.set()


@contextmanager
def veth_gate(monkeypatch: pytest.MonkeyPatch, module: ModuleType) -> Iterator[VethGate]:
    gate = VethGate(module.create_veth)
    monkeypatch.setattr(module, "create_veth", gate)
    try:
        yield gate
    finally:
        gate.open()
