"""Typed link specs and the RTM_*LINK messages for them; decoding of the kernel's link replies.

Every kind we create has a frozen spec, so what goes on the wire is a value that tests
can pack and decode without a kernel (this machine has no 8021q or ipvlan module):
:class:`Veth` (peer straight into a netns fd, its name/MAC/MTU), :class:`Bridge`,
:class:`Macvlan` (mode; the parent is ``LinkSpec.parent``), :class:`Vlan` (802.1Q id and
protocol), :class:`Ipvlan`. :class:`LinkChange` is a change of an existing link (up/down,
MTU, master/nomaster, alias, name, MAC, group, a move into another netns with a rename).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from cloudnic.dataplane import nlattr as a
from cloudnic.dataplane.rtnl import Request

IFINFO = struct.Struct("=BxHiII")          # family, type, index, flags, change
ETH_P_8021Q = 0x8100
ETH_P_8021AD = 0x88A8
MACVLAN_MODES = {"private": 1, "vepa": 2, "bridge": 4, "passthru": 8, "source": 16}
IPVLAN_MODES = {"l2": 0, "l3": 1, "l3s": 2}


@dataclass(frozen=True)
class LinkInfo:
    index: int
    ifname: str
    kind: str          # "" for a link without IFLA_INFO_KIND (lo, physical NICs)
    mac: str
    mtu: int
    up: bool           # administratively up (IFF_UP)
    master: int        # ifindex of the master (bridge), 0 when none
    link: int = 0      # IFLA_LINK: a veth's peer / a vlan's or macvlan's parent (in its netns)
    alias: str = ""
    group: int = 0
    vlan_id: int = 0   # kind "vlan" only


@dataclass(frozen=True)
class VethPeer:
    ifname: str
    netns_fd: int | None = None        # None: the peer stays in the netns of the request
    mac: str = ""
    mtu: int = 0
    queues: int = 0                    # see LinkSpec.queues


@dataclass(frozen=True)
class Veth:
    peer: VethPeer


@dataclass(frozen=True)
class Bridge:
    forward_delay: int | None = None   # centiseconds (0 = forward at once)
    stp: bool | None = None


@dataclass(frozen=True)
class Macvlan:
    mode: str = "bridge"


@dataclass(frozen=True)
class Vlan:
    vid: int
    protocol: int = ETH_P_8021Q


@dataclass(frozen=True)
class Ipvlan:
    mode: str = "l2"


LinkKind = Veth | Bridge | Macvlan | Vlan | Ipvlan


@dataclass(frozen=True)
class LinkSpec:
    """A link to create (``RTM_NEWLINK`` with ``NLM_F_CREATE | NLM_F_EXCL``)."""

    ifname: str
    kind: LinkKind
    mac: str = ""
    mtu: int = 0
    up: bool = False
    master: int = 0                    # enslave at creation
    parent: int = 0                    # IFLA_LINK: macvlan/vlan/ipvlan parent
    netns_fd: int | None = None        # create it in another netns (the request's ifindexes stay ours)
    group: int = 0
    # tx and rx queues (0: the kind's default). A veth given none allocates one per possible
    # CPU and then sets the real number to 1 once registered, which waits for an expedited
    # RCU grace period with the rtnl lock held: every other link change on the node waits too
    queues: int = 0


@dataclass(frozen=True)
class LinkChange:
    """A change of an existing link; None/"" leaves a field alone."""

    up: bool | None = None
    mtu: int = 0
    master: int | None = None          # 0 = nomaster
    ifname: str = ""
    mac: str = ""
    alias: str | None = None           # "" clears it
    netns_fd: int | None = None        # move (with ``ifname``: renamed in the new netns)
    group: int | None = None


def kind_name(kind: LinkKind) -> str:
    return {Veth: "veth", Bridge: "bridge", Macvlan: "macvlan", Vlan: "vlan", Ipvlan: "ipvlan"}[type(kind)]


def _ifinfo(index: int = 0, up: bool | None = None) -> bytes:
    flags = a.IFF_UP if up else 0
    return IFINFO.pack(0, 0, index, flags, a.IFF_UP if up is not None else 0)


def _queues(n: int) -> bytes:
    return a.u32(a.IFLA_NUM_TX_QUEUES, n) + a.u32(a.IFLA_NUM_RX_QUEUES, n) if n else b""


def _info_data(kind: LinkKind) -> bytes:
    if isinstance(kind, Veth):
        p = kind.peer
        peer = _ifinfo() + a.string(a.IFLA_IFNAME, p.ifname)
        peer += a.mac(a.IFLA_ADDRESS, p.mac) if p.mac else b""
        peer += a.u32(a.IFLA_MTU, p.mtu) if p.mtu else b""
        peer += a.u32(a.IFLA_NET_NS_FD, p.netns_fd) if p.netns_fd is not None else b""
        peer += _queues(p.queues)
        return a.attr(a.VETH_INFO_PEER, peer)
    if isinstance(kind, Bridge):
        out = a.u32(a.IFLA_BR_FORWARD_DELAY, kind.forward_delay) if kind.forward_delay is not None else b""
        return out + (a.u32(a.IFLA_BR_STP_STATE, int(kind.stp)) if kind.stp is not None else b"")
    if isinstance(kind, Macvlan):
        return a.u32(a.IFLA_MACVLAN_MODE, MACVLAN_MODES[kind.mode])
    if isinstance(kind, Vlan):
        return a.u16(a.IFLA_VLAN_ID, kind.vid) + a.be16(a.IFLA_VLAN_PROTOCOL, kind.protocol)
    return a.u16(a.IFLA_IPVLAN_MODE, IPVLAN_MODES[kind.mode])


def newlink(spec: LinkSpec, what: str = "") -> Request:
    body = _ifinfo(up=True if spec.up else None) + a.string(a.IFLA_IFNAME, spec.ifname)
    body += a.u32(a.IFLA_LINK, spec.parent) if spec.parent else b""
    body += a.mac(a.IFLA_ADDRESS, spec.mac) if spec.mac else b""
    body += a.u32(a.IFLA_MTU, spec.mtu) if spec.mtu else b""
    body += a.u32(a.IFLA_MASTER, spec.master) if spec.master else b""
    body += a.u32(a.IFLA_GROUP, spec.group) if spec.group else b""
    body += a.u32(a.IFLA_NET_NS_FD, spec.netns_fd) if spec.netns_fd is not None else b""
    body += _queues(spec.queues)
    data = _info_data(spec.kind)
    info = a.string(a.IFLA_INFO_KIND, kind_name(spec.kind)) + (a.nested(a.IFLA_INFO_DATA, data) if data else b"")
    body += a.nested(a.IFLA_LINKINFO, info)
    return Request(a.RTM_NEWLINK, a.NLM_F_CREATE | a.NLM_F_EXCL, body, what)


def setlink(index: int, change: LinkChange, what: str = "") -> Request:
    body = _ifinfo(index, change.up)
    body += a.string(a.IFLA_IFNAME, change.ifname) if change.ifname else b""
    body += a.mac(a.IFLA_ADDRESS, change.mac) if change.mac else b""
    body += a.u32(a.IFLA_MTU, change.mtu) if change.mtu else b""
    body += a.u32(a.IFLA_MASTER, change.master) if change.master is not None else b""
    body += a.u32(a.IFLA_GROUP, change.group) if change.group is not None else b""
    body += a.attr(a.IFLA_IFALIAS, change.alias.encode()) if change.alias is not None else b""
    body += a.u32(a.IFLA_NET_NS_FD, change.netns_fd) if change.netns_fd is not None else b""
    return Request(a.RTM_NEWLINK, 0, body, what)


def getlink(ifname: str = "", index: int = 0, what: str = "") -> Request:
    body = _ifinfo(index) + (a.string(a.IFLA_IFNAME, ifname) if ifname else b"")
    return Request(a.RTM_GETLINK, 0, body + a.u32(a.IFLA_EXT_MASK, a.RTEXT_FILTER_SKIP_STATS), what)


def dumplinks(master: int = 0, kind: str = "") -> Request:
    """A link dump the kernel filters (strict checking) by master and/or kind."""
    body = _ifinfo() + a.u32(a.IFLA_EXT_MASK, a.RTEXT_FILTER_SKIP_STATS)
    body += a.u32(a.IFLA_MASTER, master) if master else b""
    body += a.nested(a.IFLA_LINKINFO, a.string(a.IFLA_INFO_KIND, kind)) if kind else b""
    return Request(a.RTM_GETLINK, 0, body, "listing links")


def dellink(index: int = 0, group: int | None = None, what: str = "") -> Request:
    body = _ifinfo(index) + (a.u32(a.IFLA_GROUP, group) if group is not None else b"")
    return Request(a.RTM_DELLINK, 0, body, what)


def decode_link(payload: bytes) -> LinkInfo:
    _family, _type, index, flags, _change = IFINFO.unpack_from(payload)
    attrs = a.parse(payload, IFINFO.size)
    info = a.parse(attrs.get(a.IFLA_LINKINFO, b""))
    kind = a.get_str(info, a.IFLA_INFO_KIND)
    vid = a.get_u16(a.parse(info.get(a.IFLA_INFO_DATA, b"")), a.IFLA_VLAN_ID) if kind == "vlan" else 0
    return LinkInfo(index=index, ifname=a.get_str(attrs, a.IFLA_IFNAME), kind=kind,
                    mac=a.get_mac(attrs, a.IFLA_ADDRESS), mtu=a.get_u32(attrs, a.IFLA_MTU),
                    up=bool(flags & a.IFF_UP), master=a.get_u32(attrs, a.IFLA_MASTER),
                    link=a.get_u32(attrs, a.IFLA_LINK), alias=a.get_str(attrs, a.IFLA_IFALIAS),
                    group=a.get_u32(attrs, a.IFLA_GROUP), vlan_id=vid)
