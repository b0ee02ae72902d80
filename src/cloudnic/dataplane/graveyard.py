"""Deferred veth deletion: DEL detaches the host end and leaves the ~18 ms delete to a reaper.

Deleting one veth waits for the kernel's RCU grace periods (~18 ms of wall time, no CPU);
deleting a hundred with one ``RTM_DELLINK`` on a link group costs ~0.6 ms each. With
``deferred_delete`` a veth dataplane's unplug therefore *buries* the host end instead:

* one send of two messages: down + nomaster (the pod loses its link at once; down also
  flushes the host routes and neighbour entries through it), then the rename to a unique
  graveyard name ``cnx<12 hex>`` (a rename needs the link down) into the link group
  :data:`GRAVEYARD_GROUP` (``IFLA_GROUP``);
* a reaper thread deletes the whole group with ONE ``RTM_DELLINK`` ~100 ms after the first
  burial it has not reaped yet, which takes every buried pair (and its sandbox end) along.

``reap_now()`` reaps synchronously: ``close()`` calls it, the agent calls it at start (a
crash leaves graveyard links behind, never a working pod link), and an ADD that finds its
ifname taken in the sandbox by the peer of a buried end calls it and retries once. Names
``cnx…`` never match the attachment names (``cn`` + 11 hex), so reconciliation ignores them.
"""

from __future__ import annotations

import logging
import os
import threading

from cloudnic.dataplane import links
from cloudnic.dataplane.kernel import Kernel, LinkChange, LinkInfo
from cloudnic.dataplane.netns import NetnsHandle
from cloudnic.dataplane.rtnl import Request
from cloudnic.errors import CNIError

log = logging.getLogger(__name__)

GRAVEYARD_GROUP = 0x636E7800          # "cnx\0": a link group nothing else on a node uses
GRAVE_PREFIX = "cnx"
REAP_AFTER_S = 0.1
HOST = "in the host netns"


def grave_name() -> str:
    return GRAVE_PREFIX + os.urandom(6).hex()


def burial_requests(link: LinkInfo, grave: str) -> list[Request]:
    """Down and out of its bridge, then renamed into the graveyard group (a rename needs it down)."""
    return [links.setlink(link.index, LinkChange(up=False, master=0), f"detaching {link.ifname}"),
            links.setlink(link.index, LinkChange(ifname=grave, group=GRAVEYARD_GROUP),
                          f"moving {link.ifname} to the graveyard as {grave}")]


class Graveyard:
    """The buried host ends of one host netns and the reaper thread that deletes them."""

    def __init__(self, handle: NetnsHandle, reap_after_s: float = REAP_AFTER_S) -> None:
        self._handle = handle
        self._reap_after_s = reap_after_s
        self._lock = threading.Lock()           # one reap at a time
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._buried = False
        self.reaped = 0                          # group deletes that found something (tests, metrics)

    def _kernel(self) -> Kernel:
        return Kernel(self._handle.socket(), HOST, self._handle.discard)

    def bury(self, host: Kernel, link: LinkInfo) -> str:
        """Detach ``link`` and move it to the graveyard; its graveyard name."""
        grave = grave_name()
        host.batch(burial_requests(link, grave), f"burying {link.ifname}")
        self._buried = True
        self._start()
        self._wake.set()
        return grave

    def reap_now(self) -> bool:
        """Delete every buried link now; True when there was any."""
        with self._lock:
            self._wake.clear()
            found = self._kernel().delete_group(GRAVEYARD_GROUP)
            self.reaped += int(found)
            return found

    def _start(self) -> None:
        with self._lock:
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(target=self._run, name="cloudnic-reaper", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            if self._stop.wait(self._reap_after_s):         # let more burials join this reap
                return
            try:
                self.reap_now()
            except CNIError as e:
                log.warning("reaping buried veths failed; retrying with the next burial: %s", e)
            finally:
                self._handle.discard()                      # the reaper's socket is not kept idle

    def close(self) -> None:
        """Stop the reaper and reap what this graveyard buried and is left."""
        with self._lock:
            self._stop.set()
            thread, self._thread = self._thread, None
        self._wake.set()
        if thread is not None:
            thread.join(5)
        if self._buried:
            self.reap_now()
