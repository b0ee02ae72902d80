"""A thread pool for dataplane calls that retires any thread left in a foreign netns.

Dataplane calls enter other network namespaces on their worker thread for a syscall
(:mod:`cloudnic.dataplane.netns`). Should the thread fail to come back, it is marked
poisoned; this executor then lets that thread finish its current task and exit, and
starts a fresh thread for the queue, so nothing else ever runs on it. Use it with
``loop.run_in_executor(executor, fn, *args)`` like a ``ThreadPoolExecutor``.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, TypeVar

from cloudnic.dataplane.netns import thread_poisoned

log = logging.getLogger(__name__)
T = TypeVar("T")

_Item = tuple[Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class NetnsSafeExecutor(Executor):
    def __init__(self, max_workers: int = 8, thread_name_prefix: str = "cloudnic-dp") -> None:
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        self._max = max_workers
        self._prefix = thread_name_prefix
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads: set[threading.Thread] = set()
        self._idle = 0
        self._serial = 0
        self._shutdown = False
        self.retired = 0              # threads retired because they were poisoned

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        fut: Future[T] = Future()
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot submit after shutdown")
            self._queue.put((fut, fn, args, kwargs))
            if self._idle == 0 and len(self._threads) < self._max:
                self._spawn()
            else:
                self._idle = max(self._idle - 1, 0)
        return fut

    def _spawn(self) -> None:
        self._serial += 1
        t = threading.Thread(target=self._work, name=f"{self._prefix}-{self._serial}", daemon=True)
        self._threads.add(t)
        t.start()

    def _work(self) -> None:
        me = threading.current_thread()
        while True:
            item = self._queue.get()
            if item is None:
                break
            fut, fn, args, kwargs = item
            if fut.set_running_or_notify_cancel():
                try:
                    fut.set_result(fn(*args, **kwargs))
                except BaseException as e:
                    fut.set_exception(e)
            del item, fut, fn, args, kwargs
            if thread_poisoned():
                log.critical("retiring worker thread %s: it is stuck in a foreign netns", me.name)
                with self._lock:
                    self._threads.discard(me)
                    self.retired += 1
                    if not self._shutdown:
                        self._spawn()
                return
            with self._lock:
                self._idle += 1
        with self._lock:
            self._threads.discard(me)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._shutdown = True
            threads = list(self._threads)
        if cancel_futures:
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    item[0].cancel()
        for _ in threads:
            self._queue.put(None)
        if wait:
            for t in threads:
                t.join()
