"""Netlink attributes (``struct nlattr``): packing and parsing, and the rtnetlink numbers we use.

An attribute is ``len:u16 type:u16`` + payload, padded to 4 bytes (``len`` excludes the
padding). Nested attributes carry ``NLA_F_NESTED`` in the type. Numbers are those of
``linux/rtnetlink.h``, ``if_link.h``, ``if_addr.h``, ``neighbour.h``; native byte order
except where the kernel says ``__be16`` (the VLAN protocol).
"""

from __future__ import annotations

import struct

# message types
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK, RTM_SETLINK = 16, 17, 18, 19
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
RTM_NEWNEIGH, RTM_DELNEIGH, RTM_GETNEIGH = 28, 29, 30

# header flags
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK = 0x1, 0x2, 0x4
NLM_F_DUMP_INTR = 0x10
NLM_F_DUMP = 0x300
NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE = 0x100, 0x200, 0x400
NLM_F_ECHO = 0x8
NLMSG_NOOP, NLMSG_ERROR, NLMSG_DONE, NLMSG_OVERRUN = 1, 2, 3, 4

# links
IFF_UP = 0x1
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_LINK, IFLA_MASTER = 1, 3, 4, 5, 10
IFLA_LINKINFO, IFLA_IFALIAS, IFLA_GROUP, IFLA_NET_NS_FD, IFLA_EXT_MASK = 18, 20, 27, 28, 29
IFLA_NUM_TX_QUEUES, IFLA_NUM_RX_QUEUES = 31, 32
IFLA_INFO_KIND, IFLA_INFO_DATA = 1, 2
VETH_INFO_PEER = 1
IFLA_BR_FORWARD_DELAY, IFLA_BR_STP_STATE = 1, 5
IFLA_MACVLAN_MODE = 1
IFLA_VLAN_ID, IFLA_VLAN_PROTOCOL = 1, 5
IFLA_IPVLAN_MODE = 1
RTEXT_FILTER_SKIP_STATS = 1 << 3

# addresses
IFA_ADDRESS, IFA_LOCAL, IFA_FLAGS = 1, 2, 8
IFA_F_NODAD = 0x02

# routes
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_TABLE = 1, 4, 5, 15
RT_TABLE_MAIN = 254
RT_SCOPE_UNIVERSE, RT_SCOPE_LINK = 0, 253
RTPROT_BOOT = 3
RTN_UNICAST = 1

# neighbours
NDA_DST, NDA_LLADDR = 1, 2
NUD_PERMANENT = 0x80

NLA_F_NESTED = 0x8000
NLA_TYPE_MASK = 0x3FFF

_nla = struct.Struct("=HH")
_u16 = struct.Struct("=H")
_u32 = struct.Struct("=I")


def attr(kind: int, payload: bytes) -> bytes:
    n = 4 + len(payload)
    return _nla.pack(n, kind) + payload + b"\0" * (-n % 4)


def nested(kind: int, *attrs: bytes) -> bytes:
    return attr(kind | NLA_F_NESTED, b"".join(attrs))


def u32(kind: int, value: int) -> bytes:
    return attr(kind, _u32.pack(value))


def u16(kind: int, value: int) -> bytes:
    return attr(kind, _u16.pack(value))


def be16(kind: int, value: int) -> bytes:
    return attr(kind, struct.pack(">H", value))


def string(kind: int, text: str) -> bytes:
    return attr(kind, text.encode() + b"\0")


def mac(kind: int, text: str) -> bytes:
    return attr(kind, bytes.fromhex(text.replace(":", "")))


def parse(data: bytes | memoryview, offset: int = 0, end: int | None = None) -> dict[int, bytes]:
    """Attributes from ``offset`` to ``end`` by type (flags masked off); the last one of a type wins."""
    out: dict[int, bytes] = {}
    end = len(data) if end is None else end
    while offset + 4 <= end:
        length, kind = _nla.unpack_from(data, offset)
        if length < 4:
            break
        out[kind & NLA_TYPE_MASK] = bytes(data[offset + 4:offset + length])
        offset += (length + 3) & ~3
    return out


def get_u32(attrs: dict[int, bytes], kind: int, default: int = 0) -> int:
    raw = attrs.get(kind)
    return int(_u32.unpack_from(raw)[0]) if raw is not None and len(raw) >= 4 else default


def get_u16(attrs: dict[int, bytes], kind: int, default: int = 0) -> int:
    raw = attrs.get(kind)
    return int(_u16.unpack_from(raw)[0]) if raw is not None and len(raw) >= 2 else default


def get_str(attrs: dict[int, bytes], kind: int) -> str:
    raw = attrs.get(kind)
    return raw.split(b"\0", 1)[0].decode(errors="replace") if raw else ""


def get_mac(attrs: dict[int, bytes], kind: int) -> str:
    raw = attrs.get(kind)
    return ":".join(f"{b:02x}" for b in raw) if raw else ""
