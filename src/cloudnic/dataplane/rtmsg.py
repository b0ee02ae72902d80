"""RTM_*ADDR, RTM_*ROUTE and RTM_*NEIGH messages: packing our requests, decoding the replies.

Dumps are built for ``NETLINK_GET_STRICT_CHK``: the header names the ifindex (addresses)
or the table, with ``RTA_OIF`` (routes), and every other header field is zero, so the
kernel returns only what CHECK asks about instead of the whole netns.
"""

from __future__ import annotations

import ipaddress
import socket
import struct

from cloudnic.dataplane import nlattr as a
from cloudnic.dataplane.base import IPAddress, IPInterface
from cloudnic.dataplane.rtnl import Request

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Route = tuple[IPNetwork, IPAddress | None]

IFADDR = struct.Struct("=BBBBI")           # family, prefixlen, flags, scope, index
RTMSG = struct.Struct("=BBBBBBBBI")        # family, dst_len, src_len, tos, table, protocol, scope, type, flags
NDMSG = struct.Struct("=BxxxiHBB")         # family, ifindex, state, flags, type


def family(version: int) -> int:
    return socket.AF_INET if version == 4 else socket.AF_INET6


def _ip(raw: bytes, fam: int) -> IPAddress:
    return ipaddress.IPv4Address(raw[:4]) if fam == socket.AF_INET else ipaddress.IPv6Address(raw[:16])


# ---- addresses ------------------------------------------------------------------------


def _addr_body(index: int, iface: IPInterface, flags: int) -> bytes:
    packed = iface.ip.packed
    body = IFADDR.pack(family(iface.version), iface.network.prefixlen, flags & 0xFF, 0, index)
    body += a.attr(a.IFA_LOCAL, packed) + a.attr(a.IFA_ADDRESS, packed)
    return body + (a.u32(a.IFA_FLAGS, flags) if flags else b"")


def newaddr(index: int, iface: IPInterface, what: str = "") -> Request:
    """Add ``iface``; IPv6 without DAD (IPAM guarantees uniqueness)."""
    flags = a.IFA_F_NODAD if iface.version == 6 else 0
    return Request(a.RTM_NEWADDR, a.NLM_F_CREATE | a.NLM_F_EXCL, _addr_body(index, iface, flags), what)


def deladdr(index: int, iface: IPInterface, what: str = "") -> Request:
    return Request(a.RTM_DELADDR, 0, _addr_body(index, iface, 0), what)


def dumpaddrs(index: int) -> Request:
    return Request(a.RTM_GETADDR, 0, IFADDR.pack(0, 0, 0, 0, index), "listing addresses")


def decode_addr(payload: bytes) -> tuple[int, IPInterface] | None:
    """(ifindex, address/prefix) of an RTM_NEWADDR reply."""
    fam, prefixlen, _flags, _scope, index = IFADDR.unpack_from(payload)
    attrs = a.parse(payload, IFADDR.size)
    raw = attrs.get(a.IFA_LOCAL) or attrs.get(a.IFA_ADDRESS)
    if raw is None or fam not in (socket.AF_INET, socket.AF_INET6):
        return None
    return index, ipaddress.ip_interface(f"{_ip(raw, fam)}/{prefixlen}")


# ---- routes ---------------------------------------------------------------------------


def newroute(index: int, dst: IPNetwork, gw: IPAddress | None = None, scope_link: bool = False,
             what: str = "") -> Request:
    scope = a.RT_SCOPE_LINK if scope_link and dst.version == 4 else a.RT_SCOPE_UNIVERSE
    body = RTMSG.pack(family(dst.version), dst.prefixlen, 0, 0, a.RT_TABLE_MAIN, a.RTPROT_BOOT, scope,
                      a.RTN_UNICAST, 0)
    body += a.attr(a.RTA_DST, dst.network_address.packed) if dst.prefixlen else b""
    body += a.attr(a.RTA_GATEWAY, gw.packed) if gw is not None else b""
    body += a.u32(a.RTA_OIF, index)
    return Request(a.RTM_NEWROUTE, a.NLM_F_CREATE | a.NLM_F_EXCL, body, what)


def dumproutes(index: int, table: int = a.RT_TABLE_MAIN) -> Request:
    body = RTMSG.pack(0, 0, 0, 0, table, 0, 0, 0, 0) + a.u32(a.RTA_OIF, index)
    return Request(a.RTM_GETROUTE, 0, body, "listing routes")


def decode_route(payload: bytes) -> tuple[int, int, Route] | None:
    """(table, oif, (dst, gateway)) of an RTM_NEWROUTE reply."""
    fam, dst_len, _src, _tos, table, _proto, _scope, _type, _flags = RTMSG.unpack_from(payload)
    if fam not in (socket.AF_INET, socket.AF_INET6):
        return None
    attrs = a.parse(payload, RTMSG.size)
    table = a.get_u32(attrs, a.RTA_TABLE, table)
    raw = attrs.get(a.RTA_DST)
    zero = "0.0.0.0" if fam == socket.AF_INET else "::"
    dst = ipaddress.ip_network(f"{_ip(raw, fam) if raw else zero}/{dst_len}", strict=False)
    gw_raw = attrs.get(a.RTA_GATEWAY)
    return table, a.get_u32(attrs, a.RTA_OIF), (dst, _ip(gw_raw, fam) if gw_raw else None)


# ---- neighbours -----------------------------------------------------------------------


def newneigh(index: int, ip: IPAddress, mac: str, what: str = "") -> Request:
    body = NDMSG.pack(family(ip.version), index, a.NUD_PERMANENT, 0, 0)
    body += a.attr(a.NDA_DST, ip.packed) + a.mac(a.NDA_LLADDR, mac)
    return Request(a.RTM_NEWNEIGH, a.NLM_F_CREATE | a.NLM_F_EXCL, body, what)


def getneigh(index: int, ip: IPAddress) -> Request:
    body = NDMSG.pack(family(ip.version), index, 0, 0, 0) + a.attr(a.NDA_DST, ip.packed)
    return Request(a.RTM_GETNEIGH, 0, body, f"looking up neighbour {ip}")


def decode_neigh(payload: bytes) -> tuple[int, str, int]:
    """(ifindex, lladdr, state) of an RTM_NEWNEIGH reply."""
    _fam, index, state, _flags, _type = NDMSG.unpack_from(payload)
    return index, a.get_mac(a.parse(payload, NDMSG.size), a.NDA_LLADDR), state
