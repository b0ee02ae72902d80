"""Just enough raw rtnetlink to plug a bridge-mode or routed pod: the floor a Python agent can reach.

Measurement only (bench/floor.py): it shows what the same kernel requests cost without
pyroute2's per-request machinery, and batches the sandbox side into one ``send``
(address, up, default route), acknowledged together. IPv4 only.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct

RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK, RTM_NEWADDR, RTM_NEWROUTE, RTM_NEWNEIGH = 16, 17, 18, 20, 24, 28
NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE = 0x1, 0x4, 0x200, 0x400
NLMSG_ERROR = 2
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_MASTER, IFLA_LINKINFO, IFLA_NET_NS_FD = 1, 3, 4, 10, 18, 28
IFLA_INFO_KIND, IFLA_INFO_DATA, VETH_INFO_PEER = 1, 2, 1
IFA_ADDRESS, IFA_LOCAL = 1, 2
RTA_DST, RTA_OIF, RTA_GATEWAY = 1, 4, 5
RT_SCOPE_UNIVERSE, RT_SCOPE_LINK, RTNH_F_ONLINK = 0, 253, 4
NDA_DST, NDA_LLADDR, NUD_PERMANENT = 1, 2, 0x80
IFF_UP = 1
NLA_F_NESTED = 0x8000
_hdr = struct.Struct("=IHHII")
_ifi = struct.Struct("=BxHiII")


def attr(kind: int, data: bytes) -> bytes:
    n = 4 + len(data)
    return struct.pack("=HH", n, kind) + data + b"\0" * (-n % 4)


def nested(kind: int, *attrs: bytes) -> bytes:
    return attr(kind | NLA_F_NESTED, b"".join(attrs))


def ifname(name: str) -> bytes:
    return attr(IFLA_IFNAME, name.encode() + b"\0")


def mac(text: str) -> bytes:
    return attr(IFLA_ADDRESS, bytes.fromhex(text.replace(":", "")))


def u32(kind: int, v: int) -> bytes:
    return attr(kind, struct.pack("=I", v))


class Netlink:
    """One NETLINK_ROUTE socket; ``request`` sends messages in one go and waits for every ack."""

    def __init__(self, netns_fd: int | None = None) -> None:
        self.seq = 0
        if netns_fd is None:
            self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)
        else:
            self.sock = _socket_in(netns_fd)
        self.sock.bind((0, 0))

    def close(self) -> None:
        self.sock.close()

    def msg(self, kind: int, flags: int, body: bytes) -> bytes:
        self.seq += 1
        return _hdr.pack(_hdr.size + len(body), kind, flags | NLM_F_REQUEST | NLM_F_ACK, self.seq, 0) + body

    def request(self, *msgs: bytes) -> list[bytes]:
        """Send; return the payload of every non-ack reply; raise OSError on the first error."""
        self.sock.send(b"".join(msgs))
        pending = len(msgs)
        replies: list[bytes] = []
        err = 0
        while pending:
            data = self.sock.recv(65536)
            off = 0
            while off < len(data):
                length, kind, _flags, _seq, _pid = _hdr.unpack_from(data, off)
                if kind == NLMSG_ERROR:
                    code = struct.unpack_from("=i", data, off + _hdr.size)[0]
                    err = err or -code
                    pending -= 1
                else:
                    replies.append(data[off + _hdr.size:off + length])
                off += (length + 3) & ~3
        if err:
            raise OSError(err, os.strerror(err))
        return replies

    def link_index(self, name: str) -> int:
        body = _ifi.pack(0, 0, 0, 0, 0) + ifname(name)
        reply = self.request(self.msg(RTM_GETLINK, 0, body))
        return int(_ifi.unpack_from(reply[0], 0)[2])

    def veth(self, host: str, host_mac: str, mtu: int, master: int, peer: str, peer_mac: str,
             peer_ns_fd: int) -> None:
        peer_body = _ifi.pack(0, 0, 0, 0, 0) + ifname(peer) + mac(peer_mac) + u32(IFLA_MTU, mtu) + \
            u32(IFLA_NET_NS_FD, peer_ns_fd)
        info = nested(IFLA_LINKINFO, attr(IFLA_INFO_KIND, b"veth"),
                      nested(IFLA_INFO_DATA, attr(VETH_INFO_PEER, peer_body)))
        body = _ifi.pack(0, 0, 0, IFF_UP, IFF_UP) + ifname(host) + mac(host_mac) + u32(IFLA_MTU, mtu) + \
            u32(IFLA_MASTER, master) + info
        self.request(self.msg(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body))

    def up(self, index: int) -> bytes:
        return self.msg(RTM_NEWLINK, 0, _ifi.pack(0, 0, index, IFF_UP, IFF_UP))

    def addr(self, index: int, iface: str) -> bytes:
        ip = ipaddress.IPv4Interface(iface)
        body = struct.pack("=BBBBI", socket.AF_INET, ip.network.prefixlen, 0, 0, index) + \
            attr(IFA_LOCAL, ip.ip.packed) + attr(IFA_ADDRESS, ip.ip.packed)
        return self.msg(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, body)

    def default_route(self, gw: str, oif: int, onlink: bool = False) -> bytes:
        body = struct.pack("=BBBBBBBBI", socket.AF_INET, 0, 0, 0, 254, 3, RT_SCOPE_UNIVERSE, 1,
                           RTNH_F_ONLINK if onlink else 0) + \
            attr(RTA_GATEWAY, ipaddress.IPv4Address(gw).packed) + u32(RTA_OIF, oif)
        return self.msg(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, body)

    def host_route(self, dst: str, oif: int) -> bytes:
        """``dst``/32 on-link through ``oif`` (routed mode's route to a pod)."""
        body = struct.pack("=BBBBBBBBI", socket.AF_INET, 32, 0, 0, 254, 3, RT_SCOPE_LINK, 1, 0) + \
            attr(RTA_DST, ipaddress.IPv4Address(dst).packed) + u32(RTA_OIF, oif)
        return self.msg(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, body)

    def neigh(self, index: int, ip: str, lladdr: str) -> bytes:
        """A permanent IPv4 neighbour entry."""
        body = struct.pack("=BxxxiHBB", socket.AF_INET, index, NUD_PERMANENT, 0, 0) + \
            attr(NDA_DST, ipaddress.IPv4Address(ip).packed) + attr(NDA_LLADDR, bytes.fromhex(lladdr.replace(":", "")))
        return self.msg(RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_EXCL, body)

    def delete(self, name: str) -> None:
        self.request(self.msg(RTM_DELLINK, 0, _ifi.pack(0, 0, 0, 0, 0) + ifname(name)))


def _socket_in(netns_fd: int) -> socket.socket:
    """A netlink socket created inside ``netns_fd`` by this thread (setns there and back)."""
    from cloudnic.dataplane.netns import entered
    with entered(netns_fd):
        return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)
