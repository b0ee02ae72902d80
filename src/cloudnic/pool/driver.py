"""The pool's background driver: one daemon thread running ``maintain()``.

It runs a round every ``interval_s`` and at once when an ``acquire`` leaves a pool below
its ``min_ready`` (the manager's kick). With an ``executor`` (the agent's netns-safe
workers, where parking and unparking belong) the round runs there and submits each refill
there too, so that refills of different keys run concurrently (one per key at most) and a
round never waits for a refill's provider call. Without one, everything runs inline on
the driver thread.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Executor, Future
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .manager import PoolManager

log = logging.getLogger("cloudnic.pool")


class PoolDriver:
    def __init__(self, mgr: PoolManager, executor: Executor | None, interval_s: float) -> None:
        self.mgr = mgr
        self.executor = executor
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._futures: set[Future[Any]] = set()
        self._thread = threading.Thread(target=self._loop, name="cloudnic-pool", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _submit(self, fn: Any, *args: Any) -> Future[Any]:
        assert self.executor is not None
        fut = self.executor.submit(fn, *args)
        with self._lock:
            self._futures.add(fut)
        fut.add_done_callback(self._done)
        return fut

    def _done(self, fut: Future[Any]) -> None:
        with self._lock:
            self._futures.discard(fut)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                if self.executor is None:
                    self.mgr.maintain(None)
                else:               # unpark/park run netlink: on the agent's workers, not here
                    self.executor.submit(self.mgr.maintain, self._submit).result()
            except Exception:        # keep the driver alive; the next round retries
                log.exception("pool maintenance failed")
            self.mgr.wait_kick(self.interval_s)

    def stop(self, timeout_s: float) -> None:
        """End the thread and wait (up to ``timeout_s`` in all) for refills under way."""
        deadline = time.monotonic() + timeout_s
        self._stop.set()
        self.mgr.kick()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        with self._lock:
            futures = list(self._futures)
        for fut in futures:
            try:
                fut.result(max(0.0, deadline - time.monotonic()))
            except Exception as e:
                log.warning("a refill did not finish cleanly at stop", extra={"error": str(e)})
