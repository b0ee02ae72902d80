"""Macvlan over a VLAN provider network: the macvlan parent is ``<parent>.<vid>``.

A Neutron ``vlan`` network with segmentation id ``vid`` on a physical network mapped to
``parent`` reaches the node as 802.1Q-tagged frames on ``parent``. This mode ensures the
VLAN sub-interface exists (one ``RTM_NEWLINK``: kind ``vlan``, ``IFLA_VLAN_ID``,
``IFLA_LINK`` = the parent, up, the parent's MTU) and uses it as the macvlan parent, so
each pod's macvlan child sends and receives on that VLAN. The sub-interface is named as
Neutron's linuxbridge agent names it (``get_subinterface_name``): ``<parent>.<vid>``, or a
hashed prefix when that would exceed 15 characters. It is shared and left in place by
unplug (``remove_vlan()`` is for teardown); an existing link of that name is used only
if it is a VLAN with the same id on the same parent.

The message is built here (``vlan_newlink``, a typed ``LinkSpec`` packed by ``links.py``)
and sent as is, so its encoding is unit-tested without a kernel. A kernel without 802.1Q
support (no ``8021q`` module, as on this test machine) answers EOPNOTSUPP, which becomes a ``DataplaneError`` saying so.
"""

from __future__ import annotations

import errno
import hashlib
import threading

from cloudnic.dataplane import links
from cloudnic.dataplane.kernel import Kernel, LinkInfo, LinkSpec, Request, cause_errno
from cloudnic.dataplane.links import ETH_P_8021Q, Vlan
from cloudnic.dataplane.macvlan import MacvlanDataplane
from cloudnic.dataplane.names import IFNAMSIZ, require_ifname
from cloudnic.dataplane.veth import HOST
from cloudnic.errors import DataplaneError, InvalidConfig

MAX_VID = 4094
NO_8021Q = ("the kernel has no 802.1Q VLAN support: the 8021q module is missing; load it (modprobe 8021q) or "
            "use a flat or vxlan network")


def vlan_ifname(parent: str, vid: int) -> str:
    """``<parent>.<vid>``; past 15 characters a hashed parent prefix, as Neutron's agent does."""
    postfix = f".{vid}"
    if len(parent) + len(postfix) <= IFNAMSIZ:
        return parent + postfix
    keep = IFNAMSIZ - len(".4094") - 6            # Neutron: prefix + 6 hash chars, room for ".4094"
    return parent[:keep] + hashlib.sha1(parent.encode()).hexdigest()[:6] + postfix


def vlan_spec(ifname: str, parent_index: int, vid: int, mtu: int = 0) -> LinkSpec:
    """``ifname``: VLAN ``vid`` (802.1Q) on ``parent_index``, up, with ``mtu`` (0: the kernel's)."""
    return LinkSpec(ifname=ifname, kind=Vlan(vid, ETH_P_8021Q), mtu=mtu, up=True, parent=parent_index)


def vlan_newlink(ifname: str, parent_index: int, vid: int, mtu: int = 0) -> Request:
    """The RTM_NEWLINK request creating the VLAN sub-interface (see ``vlan_spec``)."""
    return links.newlink(vlan_spec(ifname, parent_index, vid, mtu))


def send(kernel: Kernel, req: Request, what: str, hint: str = "") -> None:
    """Send a prepared request on ``kernel``'s socket; errors translated like every kernel call."""
    with kernel.call(what, hint):
        kernel.sock.request(req)


def vlan_of(kernel: Kernel, ifname: str) -> tuple[int, int] | None:
    """(vlan id, parent ifindex) of the VLAN link ``ifname``; None when it is no VLAN or absent."""
    link = kernel.link(ifname)
    if link is None or link.kind != "vlan":
        return None
    return link.vlan_id, link.link


class VlanMacvlanDataplane(MacvlanDataplane):
    """Macvlan children on ``<parent>.<vlan_id>`` (created on first use)."""

    mode = "macvlan-vlan"

    def __init__(self, parent: str, vlan_id: int, mtu: int = 1500, host_netns_fd: int | None = None,
                 macvlan_mode: str = "bridge", host_shim: bool = False) -> None:
        if not 1 <= vlan_id <= MAX_VID:
            raise InvalidConfig(f"vlan_id {vlan_id} is out of range; use 1-{MAX_VID} (the network's "
                                "segmentation id)")
        self.physical = require_ifname(parent, "VLAN parent")
        self.vlan_id = vlan_id
        self._vlan_lock = threading.Lock()
        super().__init__(vlan_ifname(parent, vlan_id), mtu=mtu, host_netns_fd=host_netns_fd,
                         macvlan_mode=macvlan_mode, host_shim=host_shim)

    def _parent(self, host: Kernel) -> LinkInfo:
        """The VLAN sub-interface, created when missing; the macvlan parent."""
        with self._vlan_lock:
            return self.ensure_vlan(host)

    def ensure_vlan(self, host: Kernel) -> LinkInfo:
        physical = host.link(self.physical)
        if physical is None:
            raise InvalidConfig(f"VLAN parent {self.physical!r} does not exist in the host netns; set the "
                                "network's parent to the interface of its physical network")
        link = host.link(self.parent)
        if link is None:
            try:
                send(host, vlan_newlink(self.parent, physical.index, self.vlan_id, physical.mtu),
                     f"creating VLAN interface {self.parent} (VLAN {self.vlan_id} on {self.physical})")
            except DataplaneError as e:
                code = cause_errno(e)
                if code in (errno.EOPNOTSUPP, errno.ENOTSUP):
                    raise DataplaneError(f"creating VLAN interface {self.parent} (VLAN {self.vlan_id} on "
                                         f"{self.physical}) {HOST}: {NO_8021Q}", e.details) from e
                if code != errno.EEXIST:
                    raise
            link = host.link(self.parent)
            if link is None:
                raise DataplaneError(f"VLAN interface {self.parent} vanished right after its creation; retry")
        found = vlan_of(host, self.parent)
        if found != (self.vlan_id, physical.index):
            raise InvalidConfig(f"{self.parent} exists in the host netns but is not VLAN {self.vlan_id} on "
                                f"{self.physical}; remove it or choose another parent")
        if not link.up:
            host.set_up(link.index, self.parent)
        return link

    def remove_vlan(self) -> bool:
        """Delete the VLAN sub-interface (teardown); True when it was deleted."""
        host = self.host_kernel()
        with self._vlan_lock:
            link = host.link(self.parent)
            return link is not None and link.kind == "vlan" and host.delete_link(link.index, self.parent)
