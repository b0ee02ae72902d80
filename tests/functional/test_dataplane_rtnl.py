"""Raw rtnetlink against the kernel: batch errors name their request, dumps are filtered by the
kernel, the bridge's cached ifindex survives the bridge being deleted behind its back."""

from __future__ import annotations

import contextlib
import errno
import ipaddress
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from cloudnic.dataplane import BridgeDataplane, links, rtmsg
from cloudnic.dataplane.kernel import Kernel
from cloudnic.dataplane.netns import netns_socket
from cloudnic.dataplane.rtnl import KernelError, Request, RtnlSocket
from cloudnic.errors import CheckFailed, DataplaneError
from tests.functional.netns_util import Netns, add_veth, addresses, netns, ping, sh
from tests.functional.test_dataplane_modes import BRIDGE, MTU, attachment

pytestmark = pytest.mark.functional


@pytest.fixture
def ns() -> Iterator[Netns]:
    with netns("rtn") as n:
        yield n


@pytest.fixture
def kernel(ns: Netns) -> Iterator[Kernel]:
    sock = netns_socket(ns.fd)
    with contextlib.closing(sock):
        yield Kernel(sock, "in the test netns")


def ip4(text: str) -> ipaddress.IPv4Interface:
    return ipaddress.IPv4Interface(text)


def test_a_batch_failure_names_the_request_that_failed_and_the_rest_still_ran(ns: Netns, kernel: Kernel) -> None:
    reqs = [links.setlink(1, links.LinkChange(up=True), "setting lo up"),
            rtmsg.newaddr(1, ip4("10.88.0.1/24"), "adding address 10.88.0.1/24 to lo"),
            rtmsg.newaddr(1, ip4("10.88.0.1/24"), "adding address 10.88.0.1/24 to lo again"),
            rtmsg.newaddr(1, ip4("10.88.1.1/24"), "adding address 10.88.1.1/24 to lo")]
    with pytest.raises(KernelError) as raw:
        kernel.sock.batch(reqs)
    assert (raw.value.code, raw.value.position) == (errno.EEXIST, 2)
    assert {"10.88.0.1/24", "10.88.1.1/24"} <= addresses(ns, "lo")
    with pytest.raises(DataplaneError, match=r"adding address 10\.88\.1\.1/24 to lo in the test netns: already "
                                             r"exists") as e:
        kernel.batch(reqs[3:], "configuring lo")
    assert "the kernel says" in e.value.details


def test_dumps_return_only_the_asked_link(ns: Netns, kernel: Kernel) -> None:
    add_veth(ns, "rtn-a0", "rtn-a1")
    for dev, addr in (("rtn-a0", "10.89.0.1/24"), ("rtn-a1", "10.89.1.1/24")):
        sh("ip", "-n", ns.name, "addr", "add", addr, "dev", dev)
        sh("ip", "-n", ns.name, "link", "set", dev, "up")
    sh("ip", "-n", ns.name, "route", "add", "10.90.0.0/16", "via", "10.89.0.2", "dev", "rtn-a0")
    a0, a1 = kernel.link("rtn-a0"), kernel.link("rtn-a1")
    assert a0 is not None and a1 is not None
    assert {i for i in kernel.addresses(a0.index) if i.version == 4} == {ip4("10.89.0.1/24")}
    assert {i for i in kernel.addresses(a1.index) if i.version == 4} == {ip4("10.89.1.1/24")}
    v4 = {r for r in kernel.routes(a0.index) if r[0].version == 4}
    assert v4 == {(ipaddress.ip_network("10.89.0.0/24"), None),
                  (ipaddress.ip_network("10.90.0.0/16"), ipaddress.ip_address("10.89.0.2"))}
    assert kernel.neigh(a0.index, ipaddress.ip_address("10.89.0.99")) is None
    sh("ip", "-n", ns.name, "link", "del", "rtn-a0")
    assert kernel.addresses(a0.index) == set() and kernel.routes(a0.index) == set()


def test_the_bridge_is_recreated_when_deleted_behind_the_dataplanes_back(ns: Netns) -> None:
    with netns("rtsa") as sa, netns("rtsb") as sb:
        dp = BridgeDataplane(BRIDGE, mtu=MTU, host_netns_fd=ns.fd)
        try:
            first = attachment("bridge", 1, "v4")
            p1 = dp.plug(sa.fd, first)
            dp.unplug(sa.fd, first, p1)
            sh("ip", "-n", ns.name, "link", "del", BRIDGE)          # behind the cached ifindex's back
            second = attachment("bridge", 2, "v4")
            p2 = dp.plug(sb.fd, second)
            assert "10.77.0.1/24" in addresses(ns, BRIDGE), "the gateway is back on the new bridge"
            dp.check(sb.fd, second, p2)
            assert ping(sb, "10.77.0.1")
            sh("ip", "-n", ns.name, "addr", "flush", "dev", BRIDGE)
            with pytest.raises(CheckFailed, match=r"cnd-br0 in the host netns lacks address 10\.77\.0\.1/24"):
                dp.check(sb.fd, second, p2)
        finally:
            dp.close()


def test_a_kernel_without_echo_gets_the_peer_looked_up(ns: Netns, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before Linux 6.2 RTM_NEWLINK ignores NLM_F_ECHO: create_veth returns 0 and configure_sandbox
    finds the peer by name (one more round trip), with the same result."""
    real = Kernel.add_link

    def no_echo(self: Kernel, spec: Any, what: str, hint: str = "", *, echo: bool = False) -> Any:
        real(self, spec, what, hint)
        return None

    monkeypatch.setattr(Kernel, "add_link", no_echo)
    with netns("rtse") as sb:
        dp = BridgeDataplane(BRIDGE, mtu=MTU, host_netns_fd=ns.fd)
        try:
            att = attachment("bridge", 3, "dual")
            plugged = dp.plug(sb.fd, att)
            dp.check(sb.fd, att, plugged)
            assert ping(sb, "10.77.0.1")
        finally:
            dp.close()


def test_a_warm_bridge_add_is_two_kernel_round_trips(ns: Netns, monkeypatch: pytest.MonkeyPatch) -> None:
    """veth create (host; the kernel echoes the peer's ifindex) and ONE batch (sandbox): no pre-check, no
    lookup of the peer, no bridge or gateway request."""
    sent: list[list[str]] = []
    real = RtnlSocket._exchange

    def counting(self: RtnlSocket, reqs: Sequence[Request], *, dump: bool) -> list[Any]:
        sent.append([r.what or f"type {r.type}" for r in reqs])
        return real(self, reqs, dump=dump)

    with netns("rtsa") as sa, netns("rtsb") as sb:
        dp = BridgeDataplane(BRIDGE, mtu=MTU, host_netns_fd=ns.fd)
        try:
            dp.plug(sa.fd, attachment("bridge", 1, "dual"))            # creates the bridge and its gateways
            monkeypatch.setattr(RtnlSocket, "_exchange", counting)
            att = attachment("bridge", 2, "dual")
            plugged = dp.plug(sb.fd, att)
            monkeypatch.undo()
            assert len(sent) == 2, sent
            assert len(sent[1]) == 1 + 2 + 1 + 2 and sent[1][0] == "setting lo up", sent[1]
            dp.check(sb.fd, att, plugged)
            assert ping(sb, "10.77.0.1") and ping(sb, "fd00:77::1")
        finally:
            dp.close()
