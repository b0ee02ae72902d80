"""VLAN sub-interfaces for macvlan over a VLAN network: names, the exact RTM_NEWLINK, errors.

The message tests compare our encoding with bytes packed here independently and decode it
back with the attribute parser (no kernel). The functional test proves the error on this kernel, which has no 8021q.
"""

from __future__ import annotations

import errno
import hashlib
import ipaddress
import struct
from collections.abc import Iterator
from typing import Any

import pytest

from cloudnic.dataplane import VlanMacvlanDataplane, make_dataplane
from cloudnic.dataplane import nlattr as nla_mod
from cloudnic.dataplane.base import Attachment
from cloudnic.dataplane.kernel import Kernel
from cloudnic.dataplane.links import IFINFO, decode_link
from cloudnic.dataplane.rtnl import KernelError, Request
from cloudnic.dataplane.vlan import send, vlan_ifname, vlan_newlink
from cloudnic.errors import DataplaneError, InvalidConfig

IFLA_IFNAME, IFLA_MTU, IFLA_LINK, IFLA_LINKINFO = 3, 4, 5, 18
IFLA_INFO_KIND, IFLA_INFO_DATA = 1, 2
IFLA_VLAN_ID, IFLA_VLAN_PROTOCOL = 1, 5
RTM_NEWLINK, RTM_GETLINK = 16, 18
NESTED = 0x8000                                # NLA_F_NESTED, as iproute2 sets it
NEWLINK_FLAGS = 0x400 | 0x200                  # NLM_F_CREATE | NLM_F_EXCL (REQUEST|ACK added on send)


def nla(kind: int, payload: bytes) -> bytes:
    """One netlink attribute, padded to 4 bytes (the length field excludes the padding)."""
    raw = struct.pack("=HH", 4 + len(payload), kind) + payload
    return raw + b"\0" * (-len(raw) % 4)


def expected_body(ifname: str, parent: int, vid: int, mtu: int) -> bytes:
    ifi = struct.pack("=BxHiII", 0, 0, 0, 1, 1)                     # AF_UNSPEC, index 0, IFF_UP/IFF_UP
    data = nla(IFLA_VLAN_ID, struct.pack("=H", vid)) + nla(IFLA_VLAN_PROTOCOL, struct.pack(">H", 0x8100))
    info = nla(IFLA_INFO_KIND, b"vlan\0") + nla(IFLA_INFO_DATA | NESTED, data)
    attrs = nla(IFLA_IFNAME, ifname.encode() + b"\0") + nla(IFLA_LINK, struct.pack("=I", parent))
    if mtu:
        attrs += nla(IFLA_MTU, struct.pack("=I", mtu))
    return ifi + attrs + nla(IFLA_LINKINFO | NESTED, info)


@pytest.mark.parametrize(("parent", "vid", "mtu"), [("eth1", 100, 1500), ("ens3f0", 4094, 9000),
                                                    ("p1", 1, 0)])
def test_the_newlink_message_is_byte_exact(parent: str, vid: int, mtu: int) -> None:
    name = vlan_ifname(parent, vid)
    req = vlan_newlink(name, 7, vid, mtu)
    assert (req.type, req.flags) == (RTM_NEWLINK, NEWLINK_FLAGS)
    assert req.body == expected_body(name, 7, vid, mtu)


def test_the_message_decodes_back_to_a_vlan_request() -> None:
    req = vlan_newlink("eth1.100", 2, 100, 1400)
    _family, _type, index, flags, change = IFINFO.unpack_from(req.body)
    assert (index, flags, change) == (0, 1, 1)
    attrs = nla_mod.parse(req.body, IFINFO.size)
    assert nla_mod.get_str(attrs, IFLA_IFNAME) == "eth1.100"
    assert nla_mod.get_u32(attrs, IFLA_LINK) == 2
    assert nla_mod.get_u32(attrs, IFLA_MTU) == 1400
    info = nla_mod.parse(attrs[IFLA_LINKINFO])
    assert nla_mod.get_str(info, IFLA_INFO_KIND) == "vlan"
    data = nla_mod.parse(info[IFLA_INFO_DATA])
    assert nla_mod.get_u16(data, IFLA_VLAN_ID) == 100
    assert struct.unpack(">H", data[IFLA_VLAN_PROTOCOL])[0] == 0x8100


@pytest.mark.parametrize(("parent", "vid", "name"), [
    ("eth1", 100, "eth1.100"),
    ("enp129s0f1", 4094, "enp129s0f1.4094"),                        # exactly 15: kept
    ("enp129s0f1np12", 7, "enp1" + hashlib.sha1(b"enp129s0f1np12").hexdigest()[:6] + ".7"),
])
def test_names_follow_neutrons_subinterface_naming(parent: str, vid: int, name: str) -> None:
    assert vlan_ifname(parent, vid) == name
    assert len(name) <= 15


def test_a_long_parent_gets_a_hashed_prefix_that_fits_every_vid() -> None:
    names = {vlan_ifname("a-very-long-nic-name", v) for v in (1, 99, 4094)}
    assert all(len(n) <= 15 for n in names)
    assert len({n.split(".")[0] for n in names}) == 1


# ---- sending, against a fake socket ----------------------------------------------------


def link_msg(index: int, name: str, kind: str = "", mtu: int = 1500, up: bool = True, **info: Any) -> bytes:
    """An RTM_NEWLINK reply payload as the kernel sends it."""
    body = IFINFO.pack(0, 1, index, 1 if up else 0, 0) + nla(IFLA_IFNAME, name.encode() + b"\0")
    body += nla(IFLA_MTU, struct.pack("=I", mtu)) + nla(1, bytes.fromhex("020000000001"))
    if kind:
        linkinfo = nla(IFLA_INFO_KIND, kind.encode() + b"\0")
        if info:
            linkinfo += nla(IFLA_INFO_DATA, nla(IFLA_VLAN_ID, struct.pack("=H", info["vid"])))
        body += nla(IFLA_LINKINFO, linkinfo) + nla(IFLA_LINK, struct.pack("=I", info.get("link", 0)))
    return body


class FakeSocket:
    """Answers link lookups (by name) from a table; records every other request."""

    def __init__(self, links: dict[str, bytes], fail: int = 0) -> None:
        self.links = links
        self.fail = fail
        self.sent: list[tuple[bytes, int, int]] = []

    def request(self, req: Request) -> list[bytes]:
        if req.type == RTM_GETLINK:
            name = nla_mod.get_str(nla_mod.parse(req.body, IFINFO.size), IFLA_IFNAME)
            if name not in self.links:
                raise KernelError(errno.ENODEV, req.what)
            return [self.links[name]]
        self.sent.append((req.body, req.type, req.flags))
        if self.fail:
            raise KernelError(self.fail, req.what)
        self.links["eth1.100"] = link_msg(9, "eth1.100", "vlan", vid=100, link=2)
        return []


def test_fake_replies_decode_like_kernel_ones() -> None:
    link = decode_link(link_msg(5, "eth1.100", "vlan", vid=200, link=2))
    assert (link.index, link.ifname, link.kind, link.vlan_id, link.link, link.up) == (5, "eth1.100", "vlan", 200,
                                                                                      2, True)


@pytest.fixture
def dp() -> Iterator[VlanMacvlanDataplane]:
    d = VlanMacvlanDataplane("eth1", 100)
    try:
        yield d
    finally:
        d.close()


def test_ensure_vlan_sends_exactly_one_newlink_and_returns_the_link(dp: VlanMacvlanDataplane) -> None:
    sock = FakeSocket({"eth1": link_msg(2, "eth1", mtu=9000)})
    link = dp.ensure_vlan(Kernel(sock, "in the host netns"))
    assert (link.ifname, link.index) == ("eth1.100", 9)
    assert sock.sent == [(expected_body("eth1.100", 2, 100, 9000), RTM_NEWLINK, NEWLINK_FLAGS)]
    dp.ensure_vlan(Kernel(sock, "in the host netns"))
    assert len(sock.sent) == 1, "an existing VLAN of the same id and parent is reused"


def test_eopnotsupp_says_the_8021q_module_is_missing(dp: VlanMacvlanDataplane) -> None:
    sock = FakeSocket({"eth1": link_msg(2, "eth1")}, fail=errno.EOPNOTSUPP)
    with pytest.raises(DataplaneError, match=r"creating VLAN interface eth1\.100 \(VLAN 100 on eth1\).*8021q "
                                             r"module is missing.*modprobe 8021q") as e:
        dp.ensure_vlan(Kernel(sock, "in the host netns"))
    assert e.value.code == 104


def test_a_foreign_link_under_the_vlan_name_is_refused(dp: VlanMacvlanDataplane) -> None:
    sock = FakeSocket({"eth1": link_msg(2, "eth1"), "eth1.100": link_msg(5, "eth1.100", "vlan", vid=200, link=2)})
    with pytest.raises(InvalidConfig, match=r"eth1\.100 exists in the host netns but is not VLAN 100 on eth1"):
        dp.ensure_vlan(Kernel(sock, "in the host netns"))
    assert sock.sent == []


def test_a_missing_parent_is_a_config_error(dp: VlanMacvlanDataplane) -> None:
    with pytest.raises(InvalidConfig, match="VLAN parent 'eth1' does not exist"):
        dp.ensure_vlan(Kernel(FakeSocket({}), "in the host netns"))


def test_send_translates_kernel_errors() -> None:
    sock = FakeSocket({}, fail=errno.EPERM)
    with pytest.raises(DataplaneError, match="creating x in the host netns: permission denied"):
        send(Kernel(sock, "in the host netns"), vlan_newlink("x", 1, 5), "creating x")


@pytest.mark.parametrize(("settings", "message"), [
    ({"parent": "eth1", "vlan_id": 0}, "vlan_id 0 is out of range"),
    ({"parent": "eth1", "vlan_id": 4095}, "vlan_id 4095 is out of range"),
    ({"parent": "eth1"}, "needs the setting 'vlan_id'"),
    ({"parent": "eth/1", "vlan_id": 5}, "VLAN parent"),
])
def test_settings_are_checked(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidConfig, match=message):
        make_dataplane("macvlan-vlan", **settings).close()


def test_make_dataplane_builds_it_with_the_vlan_as_macvlan_parent() -> None:
    dp = make_dataplane("macvlan-vlan", parent="eth1", vlan_id=42, mtu=1400)
    try:
        assert isinstance(dp, VlanMacvlanDataplane)
        assert (dp.mode, dp.parent, dp.physical, dp.host_shim) == ("macvlan-vlan", "eth1.42", "eth1", False)
    finally:
        dp.close()


# ---- the kernel's answer on this machine (no 8021q) -------------------------------------


@pytest.mark.functional
def test_this_kernel_has_no_8021q_and_plug_says_so_and_leaves_nothing() -> None:
    from tests.functional.netns_util import add_veth, link_names, netns

    with netns("cnl-vn") as node, netns("cnl-vs") as sb:
        add_veth(node, "cnl-par0", "cnl-par1")
        before = link_names(node)
        dp = VlanMacvlanDataplane("cnl-par0", 100, host_netns_fd=node.fd)
        att = Attachment(key="vlan/c1/eth0", ifname="eth0", mac="fa:16:3e:00:01:02", mtu=1500,
                         addresses=(ipaddress.ip_interface("10.61.0.5/24"),),
                         gateways=(ipaddress.ip_address("10.61.0.1"),))
        try:
            with pytest.raises(DataplaneError, match=r"creating VLAN interface cnl-par0\.100 .*8021q module is "
                                                     "missing") as e:
                dp.plug(sb.fd, att)
            assert "Operation not supported" in e.value.details
        finally:
            dp.close()
        assert link_names(node) == before
        assert link_names(sb) == {"lo"}
