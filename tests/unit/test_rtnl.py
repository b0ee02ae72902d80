"""The raw rtnetlink socket: acks, batches, dumps, sequence checks, timeouts (fake socket), then the kernel.

The fake socket answers like the kernel does: one datagram per ``recv``, messages matched by
the sequence numbers of what was sent. The functional tests at the end run against the
real kernel in a throwaway netns.
"""

from __future__ import annotations

import errno
import ipaddress
import struct
from collections.abc import Callable

import pytest

from cloudnic.dataplane import links, rtmsg
from cloudnic.dataplane import nlattr as a
from cloudnic.dataplane.links import LinkChange
from cloudnic.dataplane.rtnl import HDR, RECV_SIZE, KernelError, Request, RtnlSocket

Msg = tuple[int, int, int, bytes]               # type, flags, seq, payload


def pack(msgs: list[Msg]) -> bytes:
    out = b""
    for kind, flags, seq, payload in msgs:
        raw = HDR.pack(HDR.size + len(payload), kind, flags, seq, 0) + payload
        out += raw + b"\0" * (-len(raw) % 4)
    return out


def ack(seq: int, code: int = 0, text: str = "") -> Msg:
    inner = HDR.pack(HDR.size, 0, 0, seq, 0)
    tlv = a.string(1, text) if text else b""
    return a.NLMSG_ERROR, 0x100 | (0x200 if text else 0), seq, struct.pack("=i", -code) + inner + tlv


class FakeNl:
    """A netlink socket stand-in: ``answer`` turns the sent requests into reply datagrams."""

    def __init__(self, answer: Callable[[list[tuple[int, int, int, bytes]]], list[bytes]]) -> None:
        self.answer = answer
        self.queue: list[bytes] = []
        self.opts: dict[int, int] = {}
        self.timeout: float | None = None
        self.sent: list[tuple[int, int, int, bytes]] = []

    def setsockopt(self, level: int, opt: int, value: int) -> None:
        self.opts[opt] = value

    def bind(self, addr: tuple[int, int]) -> None:
        pass

    def settimeout(self, t: float) -> None:
        self.timeout = t

    def send(self, data: bytes) -> int:
        off, reqs = 0, []
        while off < len(data):
            length, kind, flags, seq, _ = HDR.unpack_from(data, off)
            reqs.append((kind, flags, seq, data[off + HDR.size:off + length]))
            off += (length + 3) & ~3
        self.sent += reqs
        self.queue += self.answer(reqs)
        return len(data)

    def recv_into(self, buf: bytearray, n: int, flags: int) -> int:
        if not self.queue:
            raise TimeoutError("timed out")
        data = self.queue.pop(0)
        buf[:min(len(data), n)] = data[:n]
        return len(data)

    def close(self) -> None:
        pass


def acks_all(fail: dict[int, tuple[int, str]] | None = None) -> Callable[[list[Msg]], list[bytes]]:
    fail = fail or {}
    return lambda reqs: [pack([ack(seq, *fail.get(i, (0, ""))) for i, (_, _, seq, _) in enumerate(reqs)])]


def sock_with(answer: Callable[[list[Msg]], list[bytes]]) -> tuple[RtnlSocket, FakeNl]:
    fake = FakeNl(answer)
    return RtnlSocket(fake, timeout=0.5), fake


def test_the_socket_asks_for_strict_checks_extended_acks_and_a_timeout() -> None:
    _, fake = sock_with(acks_all())
    assert fake.opts == {12: 1, 11: 1, 10: 1}       # GET_STRICT_CHK, EXT_ACK, CAP_ACK
    assert fake.timeout == 0.5


def test_a_batch_goes_out_in_one_send_and_every_ack_is_awaited() -> None:
    sock, fake = sock_with(acks_all())
    reqs = [Request(a.RTM_NEWADDR, 0, b"\0" * 8, f"r{i}") for i in range(3)]
    sock.batch(reqs)
    assert len(fake.sent) == 3 and len({seq for _, _, seq, _ in fake.sent}) == 3
    assert all(flags & (a.NLM_F_REQUEST | a.NLM_F_ACK) == 5 for _, flags, _, _ in fake.sent)
    assert fake.queue == []


def test_a_batch_raises_the_first_failure_naming_its_request_and_the_kernels_text() -> None:
    sock, _ = sock_with(acks_all({1: (errno.EEXIST, "ipv4: Address already assigned"), 2: (errno.EINVAL, "")}))
    reqs = [Request(a.RTM_NEWLINK, 0, b"\0" * 16, "setting lo up"),
            Request(a.RTM_NEWADDR, 0, b"\0" * 8, "adding address 10.0.0.5/24 to eth0"),
            Request(a.RTM_NEWROUTE, 0, b"\0" * 12, "adding route 0.0.0.0/0 via 10.0.0.1 dev eth0")]
    with pytest.raises(KernelError) as e:
        sock.batch(reqs)
    assert (e.value.code, e.value.position, e.value.what) == (errno.EEXIST, 1, "adding address 10.0.0.5/24 to eth0")
    assert e.value.kernel_says == "ipv4: Address already assigned"


def test_replies_to_other_sequence_numbers_are_dropped() -> None:
    def answer(reqs: list[Msg]) -> list[bytes]:
        seq = reqs[0][2]
        stale = (a.RTM_NEWLINK, 0, seq - 1, b"stale")          # a late answer to an earlier, timed-out request
        return [pack([stale, ack(seq - 1), (a.RTM_NEWLINK, 0, seq, b"fresh"), ack(seq)])]

    sock, _ = sock_with(answer)
    assert sock.request(Request(a.RTM_GETLINK, 0, b"")) == [b"fresh"]


def test_a_dump_spans_datagrams_until_done() -> None:
    def answer(reqs: list[Msg]) -> list[bytes]:
        seq = reqs[0][2]
        assert reqs[0][1] & a.NLM_F_DUMP == a.NLM_F_DUMP
        return [pack([(a.RTM_NEWADDR, a.NLM_F_MULTI, seq, b"one"), (a.RTM_NEWADDR, a.NLM_F_MULTI, seq, b"two")]),
                pack([(a.RTM_NEWADDR, a.NLM_F_MULTI, seq, b"three"),
                      (a.NLMSG_DONE, a.NLM_F_MULTI, seq, struct.pack("=i", 0))])]

    sock, _ = sock_with(answer)
    assert [p for _, p in sock.dump(Request(a.RTM_GETADDR, 0, b""))] == [b"one", b"two", b"three"]


def test_an_interrupted_dump_is_redone() -> None:
    calls: list[int] = []

    def answer(reqs: list[Msg]) -> list[bytes]:
        seq = reqs[0][2]
        calls.append(seq)
        flags = a.NLM_F_MULTI | (a.NLM_F_DUMP_INTR if len(calls) == 1 else 0)
        return [pack([(a.RTM_NEWLINK, flags, seq, b"x" * len(calls)), (a.NLMSG_DONE, flags, seq, b"\0" * 4)])]

    sock, _ = sock_with(answer)
    assert [p for _, p in sock.dump(Request(a.RTM_GETLINK, 0, b""))] == [b"xx"]
    assert len(calls) == 2


def test_a_dump_refused_in_done_raises() -> None:
    sock, _ = sock_with(lambda reqs: [pack([(a.NLMSG_DONE, a.NLM_F_MULTI, reqs[0][2],
                                             struct.pack("=i", -errno.EINVAL))])])
    with pytest.raises(KernelError) as e:
        sock.dump(Request(a.RTM_GETROUTE, 0, b"", "listing routes"))
    assert e.value.code == errno.EINVAL


def test_no_answer_in_time_is_etimedout_and_breaks_the_socket() -> None:
    sock, _ = sock_with(lambda reqs: [])
    with pytest.raises(OSError) as e:
        sock.request(Request(a.RTM_GETLINK, 0, b""))
    assert e.value.errno == errno.ETIMEDOUT
    assert sock.broken


def test_a_truncated_datagram_is_an_error_not_a_silent_loss() -> None:
    sock, _ = sock_with(lambda reqs: [b"\0" * (RECV_SIZE + 4)])
    with pytest.raises(OSError) as e:
        sock.request(Request(a.RTM_GETLINK, 0, b""))
    assert e.value.errno == errno.EMSGSIZE and sock.broken


# ---- the messages we pack, decoded back ---------------------------------------------------


def body_attrs(req: Request, header: struct.Struct) -> dict[int, bytes]:
    return a.parse(req.body, header.size)


def test_setlink_down_nomaster_alias_and_a_move_with_rename() -> None:
    req = links.setlink(7, LinkChange(up=False, master=0, alias="cloudnic-port:p1", netns_fd=9, ifname="eth0",
                                      group=77))
    _, _, index, flags, change = links.IFINFO.unpack_from(req.body)
    assert (req.type, req.flags, index, flags, change) == (a.RTM_NEWLINK, 0, 7, 0, a.IFF_UP)
    attrs = body_attrs(req, links.IFINFO)
    assert a.get_u32(attrs, a.IFLA_MASTER, -1) == 0
    assert attrs[a.IFLA_IFALIAS] == b"cloudnic-port:p1"
    assert (a.get_u32(attrs, a.IFLA_NET_NS_FD), a.get_str(attrs, a.IFLA_IFNAME)) == (9, "eth0")
    assert a.get_u32(attrs, a.IFLA_GROUP) == 77
    cleared = body_attrs(links.setlink(7, LinkChange(alias="")), links.IFINFO)
    assert cleared[a.IFLA_IFALIAS] == b""                      # an empty alias clears it
    assert links.IFINFO.unpack_from(links.setlink(7, LinkChange(mtu=1400)).body)[4] == 0   # up/down untouched


def test_delete_by_group_is_one_request_without_index() -> None:
    req = links.dellink(group=77)
    assert req.type == a.RTM_DELLINK and links.IFINFO.unpack_from(req.body)[2] == 0
    assert a.get_u32(body_attrs(req, links.IFINFO), a.IFLA_GROUP) == 77


def test_ipv6_addresses_go_without_dad_and_ipv4_plain() -> None:
    v6 = rtmsg.newaddr(3, ipaddress.ip_interface("fd00::5/64"))
    fam, plen, flags, scope, index = rtmsg.IFADDR.unpack_from(v6.body)
    assert (fam, plen, flags, scope, index) == (10, 64, a.IFA_F_NODAD, 0, 3)
    attrs = body_attrs(v6, rtmsg.IFADDR)
    assert attrs[a.IFA_LOCAL] == ipaddress.ip_address("fd00::5").packed
    assert a.get_u32(attrs, a.IFA_FLAGS) == a.IFA_F_NODAD
    assert v6.flags == a.NLM_F_CREATE | a.NLM_F_EXCL
    v4 = rtmsg.newaddr(3, ipaddress.ip_interface("10.0.0.5/24"))
    assert rtmsg.IFADDR.unpack_from(v4.body)[:3] == (2, 24, 0)
    assert a.IFA_FLAGS not in body_attrs(v4, rtmsg.IFADDR)


def test_routes_and_neighbours() -> None:
    req = rtmsg.newroute(4, ipaddress.ip_network("169.254.1.1/32"), None, scope_link=True)
    fam, dst_len, _, _, table, proto, scope, rtype, _ = rtmsg.RTMSG.unpack_from(req.body)
    assert (fam, dst_len, table, proto, scope, rtype) == (2, 32, 254, a.RTPROT_BOOT, a.RT_SCOPE_LINK, 1)
    attrs = body_attrs(req, rtmsg.RTMSG)
    assert attrs[a.RTA_DST] == bytes([169, 254, 1, 1]) and a.get_u32(attrs, a.RTA_OIF) == 4
    default = body_attrs(rtmsg.newroute(4, ipaddress.ip_network("::/0"), ipaddress.ip_address("fe80::1")),
                         rtmsg.RTMSG)
    assert a.RTA_DST not in default and default[a.RTA_GATEWAY] == ipaddress.ip_address("fe80::1").packed
    neigh = rtmsg.newneigh(4, ipaddress.ip_address("10.0.0.5"), "fa:16:3e:00:00:01")
    fam, index, state, _, _ = rtmsg.NDMSG.unpack_from(neigh.body)
    assert (fam, index, state) == (2, 4, a.NUD_PERMANENT)
    assert a.get_mac(body_attrs(neigh, rtmsg.NDMSG), a.NDA_LLADDR) == "fa:16:3e:00:00:01"


def test_dumps_are_strict_check_requests_filtered_by_the_kernel() -> None:
    addr = rtmsg.dumpaddrs(12)
    assert rtmsg.IFADDR.unpack_from(addr.body) == (0, 0, 0, 0, 12)       # only ifa_index set
    route = rtmsg.dumproutes(12)
    assert rtmsg.RTMSG.unpack_from(route.body) == (0, 0, 0, 0, 254, 0, 0, 0, 0)   # only the table set
    assert a.get_u32(body_attrs(route, rtmsg.RTMSG), a.RTA_OIF) == 12
    lnk = links.dumplinks(master=5, kind="veth")
    attrs = body_attrs(lnk, links.IFINFO)
    assert a.get_u32(attrs, a.IFLA_MASTER) == 5
    assert a.get_str(a.parse(attrs[a.IFLA_LINKINFO]), a.IFLA_INFO_KIND) == "veth"


def test_replies_decode() -> None:
    addr = rtmsg.IFADDR.pack(2, 24, 0x80, 0, 3) + a.attr(a.IFA_ADDRESS, bytes([10, 0, 0, 5])) + \
        a.attr(a.IFA_LOCAL, bytes([10, 0, 0, 5]))
    assert rtmsg.decode_addr(addr) == (3, ipaddress.ip_interface("10.0.0.5/24"))
    route = rtmsg.RTMSG.pack(2, 0, 0, 0, 254, 3, 0, 1, 0) + a.u32(a.RTA_TABLE, 254) + \
        a.attr(a.RTA_GATEWAY, bytes([10, 0, 0, 1])) + a.u32(a.RTA_OIF, 3)
    assert rtmsg.decode_route(route) == (254, 3, (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_address("10.0.0.1")))
    neigh = rtmsg.NDMSG.pack(2, 3, 0x80, 0, 1) + a.attr(a.NDA_DST, bytes([10, 0, 0, 1])) + \
        a.mac(a.NDA_LLADDR, "EE:00:00:00:00:01")
    assert rtmsg.decode_neigh(neigh) == (3, "ee:00:00:00:00:01", 0x80)
