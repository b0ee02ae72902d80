"""Every link kind we create, packed and decoded back (this kernel has no 8021q/ipvlan to ask).

Expected bytes are built here independently with ``struct``; nested attributes carry
``NLA_F_NESTED`` as iproute2 sends them. The last test creates the kinds the kernel has
(veth into a netns, bridge, macvlan) for real and reads them back with ``decode_link``.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from cloudnic.dataplane import links
from cloudnic.dataplane import nlattr as a
from cloudnic.dataplane.graveyard import GRAVEYARD_GROUP, burial_requests
from cloudnic.dataplane.links import Bridge, Ipvlan, LinkInfo, LinkSpec, Macvlan, Veth, VethPeer, Vlan

NESTED = 0x8000


def nla(kind: int, payload: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(payload), kind) + payload
    return raw + b"\0" * (-len(raw) % 4)


def ifi(index: int = 0, up: bool = False) -> bytes:
    return struct.pack("=BxHiII", 0, 0, index, int(up), int(up))


def name(n: str) -> bytes:
    return nla(3, n.encode() + b"\0")


def u32(kind: int, v: int) -> bytes:
    return nla(kind, struct.pack("=I", v))


def linkinfo(kind: str, data: bytes = b"") -> bytes:
    inner = nla(1, kind.encode() + b"\0") + (nla(2 | NESTED, data) if data else b"")
    return nla(18 | NESTED, inner)


def test_veth_with_its_peer_straight_into_a_netns() -> None:
    spec = LinkSpec(ifname="cn0123456789a", kind=Veth(VethPeer("eth0", netns_fd=42, mac="fa:16:3e:00:00:01",
                                                                mtu=1400)),
                    mac="ee:00:00:00:00:02", mtu=1400, up=True, master=7)
    peer = ifi() + name("eth0") + nla(1, bytes.fromhex("fa163e000001")) + u32(4, 1400) + u32(28, 42)
    expected = ifi(up=True) + name("cn0123456789a") + nla(1, bytes.fromhex("ee0000000002")) + u32(4, 1400) + \
        u32(10, 7) + linkinfo("veth", nla(1, peer))
    req = links.newlink(spec)
    assert (req.type, req.flags) == (a.RTM_NEWLINK, a.NLM_F_CREATE | a.NLM_F_EXCL)
    assert req.body == expected


def test_queues_are_asked_for_both_ends_of_a_veth() -> None:
    spec = LinkSpec(ifname="cn0", kind=Veth(VethPeer("eth0", queues=1)), queues=1)
    peer = ifi() + name("eth0") + u32(31, 1) + u32(32, 1)
    assert links.newlink(spec).body == ifi() + name("cn0") + u32(31, 1) + u32(32, 1) + linkinfo("veth", nla(1, peer))
    assert links.newlink(LinkSpec(ifname="cn0", kind=Veth(VethPeer("eth0")))).body == \
        ifi() + name("cn0") + linkinfo("veth", nla(1, ifi() + name("eth0"))), "0: the kernel's default, unasked"


@pytest.mark.parametrize(("kind", "data"), [
    (Bridge(), b""),
    (Bridge(forward_delay=0, stp=False), u32(1, 0) + u32(5, 0)),
    (Macvlan("bridge"), u32(1, 4)),
    (Macvlan("private"), u32(1, 1)),
    (Macvlan("passthru"), u32(1, 8)),
    (Vlan(100), nla(1, struct.pack("=H", 100)) + nla(5, struct.pack(">H", 0x8100))),
    (Vlan(7, protocol=0x88A8), nla(1, struct.pack("=H", 7)) + nla(5, struct.pack(">H", 0x88A8))),
    (Ipvlan("l2"), nla(1, struct.pack("=H", 0))),
    (Ipvlan("l3"), nla(1, struct.pack("=H", 1))),
])
def test_each_kind_packs_its_info_data(kind: links.LinkKind, data: bytes) -> None:
    spec = LinkSpec(ifname="x0", kind=kind, parent=3 if not isinstance(kind, Bridge) else 0, netns_fd=9)
    body = ifi() + name("x0") + (u32(5, 3) if spec.parent else b"") + u32(28, 9) + \
        linkinfo(links.kind_name(kind), data)
    assert links.newlink(spec).body == body


def test_a_packed_link_decodes_back() -> None:
    spec = LinkSpec(ifname="eth1.100", kind=Vlan(100), mac="02:00:00:00:00:09", mtu=9000, up=True, parent=2,
                    group=5)
    info = links.decode_link(links.newlink(spec).body)
    assert (info.ifname, info.kind, info.vlan_id, info.link, info.mtu, info.up, info.mac, info.group) == \
        ("eth1.100", "vlan", 100, 2, 9000, True, "02:00:00:00:00:09", 5)


def test_getlink_asks_without_stats() -> None:
    req = links.getlink("eth0")
    attrs = a.parse(req.body, links.IFINFO.size)
    assert a.get_str(attrs, a.IFLA_IFNAME) == "eth0"
    assert a.get_u32(attrs, a.IFLA_EXT_MASK) == a.RTEXT_FILTER_SKIP_STATS


def test_burial_is_down_and_nomaster_then_a_rename_into_the_group() -> None:
    link = LinkInfo(index=12, ifname="cn0123456789a", kind="veth", mac="", mtu=1500, up=True, master=4)
    first, second = burial_requests(link, "cnx00112233aabb")
    _, _, index, flags, change = links.IFINFO.unpack_from(first.body)
    assert (index, flags, change) == (12, 0, a.IFF_UP)
    assert a.get_u32(a.parse(first.body, links.IFINFO.size), a.IFLA_MASTER, -1) == 0
    attrs = a.parse(second.body, links.IFINFO.size)
    assert links.IFINFO.unpack_from(second.body)[2] == 12
    assert (a.get_str(attrs, a.IFLA_IFNAME), a.get_u32(attrs, a.IFLA_GROUP)) == ("cnx00112233aabb", GRAVEYARD_GROUP)
    assert "cn0123456789a" in first.what and "cnx00112233aabb" in second.what


def possible_cpus() -> int:
    n = 0
    for part in Path("/sys/devices/system/cpu/possible").read_text().strip().split(","):
        first, _, last = part.partition("-")
        n += int(last or first) - int(first) + 1
    return n


@pytest.mark.functional
def test_the_kernel_creates_what_we_pack_and_we_read_it_back() -> None:
    from cloudnic.dataplane.kernel import Kernel
    from cloudnic.dataplane.netns import netns_socket
    from tests.functional.netns_util import netns

    with netns("cnl-rk") as node, netns("cnl-rs") as sb:
        k = Kernel(netns_socket(node.fd), "in the test node")
        s = Kernel(netns_socket(sb.fd), "in the test sandbox")
        try:
            k.add_link(LinkSpec(ifname="rk-br", kind=Bridge(forward_delay=0, stp=False), up=True), "bridge")
            br = k.link("rk-br")
            assert br is not None and br.kind == "bridge" and br.up
            peer = VethPeer("eth7", netns_fd=sb.fd, mac="fa:16:3e:00:00:07", mtu=1400, queues=1)
            k.add_link(LinkSpec(ifname="rk-v0", kind=Veth(peer), mac="ee:00:00:00:00:07", mtu=1400, up=True,
                                master=br.index, queues=1), "veth")
            for ns, ifname in ((node, "rk-v0"), (sb, "eth7")):
                (d,) = ns.ip("-d", "link", "show", ifname)
                assert (d["num_tx_queues"], d["num_rx_queues"]) == (1, 1), ifname
            host = k.link("rk-v0")
            assert host is not None and (host.kind, host.master, host.mtu, host.up) == ("veth", br.index, 1400, True)
            inside = s.link("eth7")
            assert inside is not None and (inside.mac, inside.mtu, inside.up) == ("fa:16:3e:00:00:07", 1400, False)
            assert host.link == inside.index                 # IFLA_LINK: the peer's ifindex in its netns
            k.add_link(LinkSpec(ifname="rk-p0", kind=Veth(VethPeer("rk-p1"))), "veth in the same netns")
            lower = k.link("rk-p0")
            assert lower is not None and k.link("rk-p1") is not None
            (d,) = node.ip("-d", "link", "show", "rk-p0")
            assert d["num_tx_queues"] == possible_cpus(), "unasked, a veth gets one queue per possible CPU"
            k.add_link(LinkSpec(ifname="rk-mv", kind=Macvlan("bridge"), parent=lower.index), "macvlan")
            mv = k.link("rk-mv")
            assert mv is not None and (mv.kind, mv.link) == ("macvlan", lower.index)
            assert [lk.ifname for lk in k.links(master=br.index)] == ["rk-v0"]
            assert {lk.ifname for lk in k.links(kind="macvlan")} == {"rk-mv"}
            k.set_link(host.index, links.LinkChange(master=0, up=False, alias="a1", group=9), "rk-v0")
            host = k.link("rk-v0")
            assert host is not None and (host.master, host.up, host.alias, host.group) == (0, False, "a1", 9)
        finally:
            k.sock.close()
            s.sock.close()
