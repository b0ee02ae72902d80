"""Deleting a link without waiting for the kernel's clean-up after it.

``RTM_DELLINK`` of a veth returns only after ``netdev_run_todo``: an ``rcu_barrier`` and
the wait for the device's last references, 11-35 ms of wall time with no CPU and with the
rtnl lock already released. The link (a veth: the pair) is gone from its netns before
that wait starts (unlisted, down, its addresses, routes and neighbours flushed, its names
free; out of its bridge by the time the rtnl lock is free for anyone's next change): what
is left is the kernel freeing memory. A macvlan child's delete waits the same way.

:class:`Unlinker` sends the delete from one of its own threads and returns to the caller
as soon as a lookup by ifindex on the caller's socket no longer finds the link (~0.6 ms),
or when the delete has answered, whichever comes first; an error of the delete is the
caller's. The ifindex is not reused while the delete is in flight (the kernel hands out
new indexes), and a link found at that index under another name counts as gone. A crash
while a delete is in flight loses nothing: the kernel finishes a delete it has begun, and
one it has not begun leaves the link where the caller's journal finds it.
"""

from __future__ import annotations

import concurrent.futures
import threading

from cloudnic.dataplane.executor import NetnsSafeExecutor
from cloudnic.dataplane.kernel import Kernel
from cloudnic.dataplane.netns import NetnsHandle, netns_socket
from cloudnic.dataplane.rtnl import RtnlSocket
from cloudnic.errors import DataplaneError

POLL_S = 0.0003          # between lookups while the delete is in flight
MAX_DELETERS = 64        # deletes in flight at once; more wait for a thread (back-pressure)


class Unlinker:
    """Deletes links on deleter threads: in the netns of ``handle`` (each thread keeps its own
    socket there), or in another netns given by descriptor (a sandbox's: a socket opened for
    that one delete by the caller, while its descriptor is surely valid, and closed after it)."""

    def __init__(self, handle: NetnsHandle, where: str) -> None:
        self._handle = handle
        self._where = where
        self._lock = threading.Lock()
        self._pool: NetnsSafeExecutor | None = None     # its threads enter the netns to open their socket
        self._closed = False

    def _submit(self, index: int, ifname: str, sock: RtnlSocket | None,
                where: str) -> concurrent.futures.Future[bool]:
        with self._lock:
            if self._closed:
                raise DataplaneError("the dataplane is closed; the agent is shutting down")
            if self._pool is None:
                self._pool = NetnsSafeExecutor(MAX_DELETERS, thread_name_prefix="cloudnic-unlink")
            return self._pool.submit(self._delete, index, ifname, sock, where)

    def _delete(self, index: int, ifname: str, sock: RtnlSocket | None, where: str) -> bool:
        if sock is None:
            return Kernel(self._handle.socket(), self._where, self._handle.discard).delete_link(index, ifname)
        try:
            return Kernel(sock, where).delete_link(index, ifname)
        finally:
            sock.close()

    def delete(self, kernel: Kernel, index: int, ifname: str, netns_fd: int | None = None) -> bool:
        """Delete link ``index`` (named ``ifname``) of the netns ``kernel`` speaks to — the handle's,
        or the one of ``netns_fd`` — and return once it is gone from there: True, or False when the
        delete answered first that it was gone already."""
        sock = netns_socket(netns_fd) if netns_fd is not None else None
        try:
            done = self._submit(index, ifname, sock, kernel.where)
        except BaseException:
            if sock is not None:
                sock.close()
            raise
        while True:
            try:
                return done.result(timeout=POLL_S)
            except concurrent.futures.TimeoutError:
                pass
            link = kernel.link(index=index)
            if link is None or link.ifname != ifname:
                return True

    def close(self) -> None:
        """Wait for the deletes in flight (the kernel's clean-up, tens of ms) and end the threads."""
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
