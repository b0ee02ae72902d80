"""cloudnic.dataplane: plug ports into sandboxes over raw rtnetlink (``rtnl.py``).

Modes: ``bridge``, ``routed``, ``macvlan``; for Neutron ``linuxbridge`` (the agent's
``tap…``/``brq…`` naming, with parking of pooled ports), ``ovs`` (br-int over OVSDB) and
``macvlan-vlan`` (macvlan on ``<parent>.<vid>``).

``make_dataplane(mode, **settings)`` builds one; the contract is in ``base.py``.
Construction touches no kernel object (it only opens the host netns descriptor), so a
bad setting fails at startup with ``InvalidConfig`` and nothing to clean up.

A dataplane is safe to call from several worker threads at once for different keys
(host sockets are per thread, shared objects such as the bridge or the macvlan shim are
created under a lock). Run the calls on ``NetnsSafeExecutor`` so that a thread stuck in
a foreign netns is retired (see ``netns.py``).
"""

from __future__ import annotations

import inspect
from typing import Any

from cloudnic.dataplane.base import Dataplane, ParkingDataplane
from cloudnic.dataplane.bridge import BridgeDataplane
from cloudnic.dataplane.executor import NetnsSafeExecutor
from cloudnic.dataplane.linuxbridge import LinuxBridgeDataplane, bridge_name, tap_name
from cloudnic.dataplane.macvlan import MacvlanDataplane
from cloudnic.dataplane.names import host_ifname_for
from cloudnic.dataplane.netns import is_netns_fd, thread_poisoned
from cloudnic.dataplane.ovs import OvsDataplane
from cloudnic.dataplane.parking import PortParker, park_attachment
from cloudnic.dataplane.routed import RoutedDataplane
from cloudnic.dataplane.vlan import VlanMacvlanDataplane
from cloudnic.errors import InvalidConfig

MODES: dict[str, type[Dataplane]] = {
    "bridge": BridgeDataplane,
    "routed": RoutedDataplane,
    "macvlan": MacvlanDataplane,
    "linuxbridge": LinuxBridgeDataplane,
    "ovs": OvsDataplane,
    "macvlan-vlan": VlanMacvlanDataplane,
}

__all__ = ["MODES", "BridgeDataplane", "Dataplane", "LinuxBridgeDataplane", "MacvlanDataplane",
           "NetnsSafeExecutor", "OvsDataplane", "ParkingDataplane", "PortParker", "RoutedDataplane",
           "VlanMacvlanDataplane", "bridge_name", "host_ifname_for", "is_netns_fd", "make_dataplane",
           "park_attachment", "tap_name", "thread_poisoned"]


def make_dataplane(mode: str, /, **settings: Any) -> Dataplane:
    """The dataplane for ``mode`` built from ``settings`` (its constructor's keyword arguments)."""
    cls = MODES.get(mode)
    if cls is None:
        raise InvalidConfig(f"dataplane mode {mode!r} is not supported; use one of {', '.join(MODES)}")
    params = inspect.signature(cls).parameters
    unknown = sorted(set(settings) - set(params))
    if unknown:
        raise InvalidConfig(f"dataplane {mode!r} has no setting {unknown[0]!r}; its settings are "
                            f"{', '.join(params)}")
    missing = [n for n, p in params.items() if p.default is inspect.Parameter.empty and n not in settings]
    if missing:
        raise InvalidConfig(f"dataplane {mode!r} needs the setting {missing[0]!r}")
    for name, value in settings.items():
        default = params[name].default
        if value is None and default is not None and name != "host_netns_fd":
            raise InvalidConfig(f"dataplane {mode!r} setting {name!r} may not be empty")
        expected = bool if isinstance(default, bool) else int if isinstance(default, int) else \
            str if isinstance(default, str) else None
        if expected is not None and value is not None and not _is(value, expected):
            raise InvalidConfig(f"dataplane {mode!r} setting {name!r} must be a {expected.__name__}, "
                                f"not {value!r}")
    return cls(**settings)


def _is(value: object, expected: type) -> bool:
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, expected)
