"""Fault injection for crash-safety tests: SIGKILL the agent at a named step (any layer may call it).

``CLOUDNIC_CRASH_AT`` (a comma-separated list of point names) is read once at start; it
is meant for the test suite and the torture harness only, never for production. The
points are listed in ``POINTS`` so tests can cover every one of them.
"""

from __future__ import annotations

import os
import signal

POINTS = (
    "add:journaled",        # intent written, nothing else done
    "add:port-created",     # the provider made the port; the journal does not know it yet
    "add:port-journaled",   # the journal knows the port; nothing plugged
    "plug:veth-created",    # the pod's link exists (veth pair; macvlan: the child), its sandbox side is bare
    "plug:sandbox-configured",  # sandbox side configured; host-side finishing steps (routes, shim) not done
    "add:plugged",          # links, addresses and routes exist; not committed
    "del:releasing",        # attachment marked releasing, nothing removed yet
    "del:unplugged",        # links removed; the port still exists
    "del:port-deleted",     # the port is gone at the provider; the records are not
)

_armed = frozenset(p for p in os.environ.get("CLOUDNIC_CRASH_AT", "").split(",") if p)


def point(name: str) -> None:
    if name in _armed:
        os.kill(os.getpid(), signal.SIGKILL)
