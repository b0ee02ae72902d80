"""make_dataplane, netns helpers without root, kernel error translation, the safe executor."""

from __future__ import annotations

import errno
import ipaddress
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cloudnic.dataplane import (
    BridgeDataplane,
    MacvlanDataplane,
    NetnsSafeExecutor,
    RoutedDataplane,
    is_netns_fd,
    make_dataplane,
)
from cloudnic.dataplane import netns as netns_mod
from cloudnic.dataplane.base import Dataplane
from cloudnic.dataplane.kernel import Kernel, LinkSpec
from cloudnic.dataplane.links import Bridge
from cloudnic.dataplane.netns import NetnsPoisoned, entered, sysctl_get, thread_poisoned
from cloudnic.dataplane.rtnl import KernelError, Request
from cloudnic.errors import DataplaneError, InternalError, InvalidConfig, NotFound, TryAgainLater


@pytest.fixture
def built() -> Iterator[list[Dataplane]]:
    made: list[Dataplane] = []
    yield made
    for dp in made:
        dp.close()


@pytest.mark.parametrize(("mode", "settings", "cls"), [
    ("bridge", {"bridge": "br-test", "mtu": 1400, "gateway_on_bridge": False}, BridgeDataplane),
    ("routed", {"mtu": 1450, "enable_forwarding": False}, RoutedDataplane),
    ("macvlan", {"parent": "eth0", "macvlan_mode": "private", "host_shim": False}, MacvlanDataplane),
])
def test_make_dataplane_builds_each_mode(mode: str, settings: dict[str, Any], cls: type,
                                         built: list[Dataplane]) -> None:
    dp = make_dataplane(mode, **settings)
    built.append(dp)
    assert isinstance(dp, cls)
    assert dp.mode == mode


@pytest.mark.parametrize(("mode", "settings", "message"), [
    ("vxlan", {}, "mode 'vxlan' is not supported; use one of bridge, routed, macvlan"),
    ("bridge", {"bridge": "br0", "colour": "red"}, "no setting 'colour'"),
    ("bridge", {}, "needs the setting 'bridge'"),
    ("bridge", {"bridge": "br0", "mtu": "1400"}, "'mtu' must be a int"),
    ("bridge", {"bridge": "br0", "gateway_on_bridge": "yes"}, "'gateway_on_bridge' must be a bool"),
    ("bridge", {"bridge": "a-bridge-name-too-long"}, "bridge name"),
    ("macvlan", {"parent": "eth0", "macvlan_mode": "source"}, "macvlan mode 'source'"),
    ("routed", {"gateway_v4": "fe80::1"}, "gateway_v4"),
    ("routed", {"gateway_v6": "224.0.0.1"}, "gateway_v6"),
])
def test_make_dataplane_refuses_bad_settings(mode: str, settings: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidConfig, match=message.replace("(", r"\(")):
        make_dataplane(mode, **settings)


def test_is_netns_fd(tmp_path: Path) -> None:
    fd = os.open("/proc/self/ns/net", os.O_RDONLY)
    other = os.open(tmp_path, os.O_RDONLY)
    try:
        assert is_netns_fd(fd)
        assert not is_netns_fd(other)
    finally:
        os.close(fd)
        os.close(other)


def test_host_netns_fd_must_be_a_netns(tmp_path: Path) -> None:
    fd = os.open(tmp_path, os.O_RDONLY)
    try:
        with pytest.raises(Exception, match="not a network namespace"):
            make_dataplane("routed", host_netns_fd=fd)
    finally:
        os.close(fd)


def test_sysctl_outside_net_is_refused() -> None:
    fd = os.open("/proc/self/ns/net", os.O_RDONLY)
    try:
        with pytest.raises(InternalError, match="only net/"):
            sysctl_get(fd, "kernel/hostname")
        with pytest.raises(InternalError, match="only net/"):
            sysctl_get(fd, "net/../kernel/hostname")
    finally:
        os.close(fd)


def test_a_thread_that_cannot_return_is_poisoned_and_refuses_more(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def fake_setns(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 2:
            raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(netns_mod, "_setns", fake_setns)
    seen: dict[str, object] = {}

    def victim() -> None:
        try:
            with entered(123):
                pass
        except NetnsPoisoned as e:
            seen["first"] = e
        seen["poisoned"] = thread_poisoned()
        try:
            with entered(123):
                pass
        except NetnsPoisoned as e:
            seen["second"] = e

    t = threading.Thread(target=victim)
    t.start()
    t.join()
    assert "cannot return" in str(seen["first"])
    assert seen["poisoned"] is True
    assert "may not be reused" in str(seen["second"])
    assert len(calls) == 2            # the second entry never reached setns
    assert not thread_poisoned()     # other threads are unaffected


def test_executor_retires_a_poisoned_thread() -> None:
    ex = NetnsSafeExecutor(max_workers=1)
    try:
        first = ex.submit(threading.get_ident).result(5)

        def poison() -> int:
            netns_mod._state.poisoned = True
            return threading.get_ident()

        poisoned = ex.submit(poison).result(5)
        after = ex.submit(threading.get_ident).result(5)
        assert first == poisoned
        assert after != poisoned
        assert ex.retired == 1
        assert ex.submit(thread_poisoned).result(5) is False
    finally:
        ex.shutdown()


def test_executor_runs_in_parallel_and_propagates_errors() -> None:
    ex = NetnsSafeExecutor(max_workers=4)
    barrier = threading.Barrier(4, timeout=5)
    try:
        futs = [ex.submit(barrier.wait) for _ in range(4)]
        assert sorted(f.result(5) for f in futs) == [0, 1, 2, 3]
        with pytest.raises(ZeroDivisionError):
            ex.submit(lambda: 1 / 0).result(5)
    finally:
        ex.shutdown()
    with pytest.raises(RuntimeError):
        ex.submit(int)


class FakeSocket:
    """Answers every request with one netlink error (what a refusing kernel does)."""

    def __init__(self, code: int) -> None:
        self.code = code

    def _fail(self, req: Any) -> Any:
        what = req.what if isinstance(req, Request) else req[0].what
        raise KernelError(self.code, what)

    request = dump = batch = _fail


def test_kernel_errors_name_the_object_and_the_netns() -> None:
    k = Kernel(FakeSocket(errno.EEXIST), "in the sandbox")
    with pytest.raises(DataplaneError, match=r"10\.0\.0\.5/24 to eth0 in the sandbox: already exists"):
        k.add_address(2, ipaddress.ip_interface("10.0.0.5/24"), "eth0")
    assert k.add_address(2, ipaddress.ip_interface("10.0.0.5/24"), "eth0", exist_ok=True) is False
    with pytest.raises(TryAgainLater, match=r"route 0\.0\.0\.0/0 via 10\.0\.0\.1 dev eth0 in the sandbox"):
        Kernel(FakeSocket(errno.EBUSY), "in the sandbox").add_route(
            2, "eth0", ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_address("10.0.0.1"))
    with pytest.raises(NotFound):
        Kernel(FakeSocket(errno.ENOENT), "in the host netns").add_neigh(
            2, "cn1", ipaddress.ip_address("10.0.0.5"), "02:00:00:00:00:01")


def test_kernel_gone_objects_are_success_on_delete_and_none_on_lookup() -> None:
    k = Kernel(FakeSocket(errno.ENODEV), "in the host netns")
    assert k.link("cn123") is None
    assert k.delete_link(7, "cn123") is False
    gone_address = Kernel(FakeSocket(errno.EADDRNOTAVAIL), "in the host netns")
    assert gone_address.delete_address(7, ipaddress.ip_interface("10.0.0.1/24"), "br0") is False


def test_socket_errors_discard_the_socket() -> None:
    dropped: list[bool] = []

    class Broken(FakeSocket):
        def _fail(self, req: Any) -> Any:
            raise OSError(errno.ENOBUFS, "No buffer space available")

        request = _fail

    k = Kernel(Broken(0), "in the host netns", lambda: dropped.append(True))
    with pytest.raises(TryAgainLater):
        k.add_link(LinkSpec(ifname="br0", kind=Bridge()), "bridge br0")
    assert dropped == [True]
