"""The undo list of a plug: steps recorded as side effects happen, run in reverse on failure."""

from __future__ import annotations

import logging
from collections.abc import Callable

log = logging.getLogger(__name__)


class Undo:
    """Record ``(what, step)`` after each side effect; ``run()`` undoes them newest first.

    Undo steps are best effort: a failing step is logged and the next one still runs,
    so one stuck object does not keep the others behind.
    """

    def __init__(self) -> None:
        self._steps: list[tuple[str, Callable[[], object]]] = []

    def add(self, what: str, step: Callable[[], object]) -> None:
        self._steps.append((what, step))

    def run(self) -> None:
        while self._steps:
            what, step = self._steps.pop()
            try:
                step()
            except Exception as e:
                log.warning("undo of a failed plug: %s failed: %s", what, e)

    def __len__(self) -> int:
        return len(self._steps)
