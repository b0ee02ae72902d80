"""Netns sockets and sysctls: the socket lands in the target netns, the thread comes home."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloudnic.dataplane.kernel import Kernel
from cloudnic.dataplane.netns import NetnsHandle, is_netns_fd, netns_socket, sysctl_get, sysctl_set
from tests.functional.netns_util import Netns, add_veth, netns

pytestmark = pytest.mark.functional


def own_netns() -> int:
    return os.stat("/proc/thread-self/ns/net").st_ino


@pytest.fixture
def ns() -> Iterator[Netns]:
    with netns("nst") as n:
        yield n


def test_socket_is_bound_to_the_target_and_the_thread_returns(ns: Netns) -> None:
    add_veth(ns, "cnd-a0", "cnd-a1")
    before = own_netns()
    sock = netns_socket(ns.fd)
    try:
        assert own_netns() == before
        names = {lk.ifname for lk in Kernel(sock, "in the test netns").links()}
        assert names == {"lo", "cnd-a0", "cnd-a1"}
    finally:
        sock.close()


def test_is_netns_fd_on_a_named_netns(ns: Netns) -> None:
    assert is_netns_fd(ns.fd)


def test_sysctls_follow_the_target_netns(ns: Netns) -> None:
    own = Path("/proc/sys/net/ipv4/ip_forward").read_text().strip()
    sysctl_set(ns.fd, "net/ipv4/ip_forward", "1")
    assert sysctl_get(ns.fd, "net/ipv4/ip_forward") == "1"
    assert Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() == own
    sysctl_set(ns.fd, "net/ipv4/ip_forward", "0")
    assert sysctl_get(ns.fd, "net/ipv4/ip_forward") == "0"


def test_handle_gives_each_thread_its_own_socket_in_the_netns(ns: Netns) -> None:
    add_veth(ns, "cnd-b0", "cnd-b1")
    handle = NetnsHandle(ns.fd)
    seen: list[tuple[int, set[str]]] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            sock = handle.socket()
            assert handle.socket() is sock
            seen.append((id(sock), {lk.ifname for lk in Kernel(sock, "in the test netns").links()}))
        except BaseException as e:
            errors.append(e)

    try:
        threads = [threading.Thread(target=worker) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        assert len({s[0] for s in seen}) == 4
        assert all(s[1] == {"lo", "cnd-b0", "cnd-b1"} for s in seen)
    finally:
        handle.close()


def test_a_bad_fd_is_refused() -> None:
    fd = os.open("/", os.O_RDONLY)
    try:
        with pytest.raises(Exception, match="not an open network namespace"):
            netns_socket(fd)
    finally:
        os.close(fd)
