"""Unlinker: a link delete returns once the pair is gone, not once the kernel has cleaned up.

The kernel's clean-up after a veth delete (``netdev_run_todo``) is stood in for by a gate
the deleter thread waits at after its real delete: the caller must come back while the
deleter is still held there, with both ends of the pair gone from their netns.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import pytest

from cloudnic.dataplane.kernel import Kernel
from cloudnic.dataplane.netns import NetnsHandle, netns_socket
from cloudnic.dataplane.unlink import Unlinker
from cloudnic.errors import DataplaneError
from tests.functional.netns_util import Netns, link, link_names, netns, sh

pytestmark = pytest.mark.functional


@pytest.fixture
def node() -> Iterator[Netns]:
    with netns("unl-node") as n:
        yield n


@pytest.fixture
def sandbox() -> Iterator[Netns]:
    with netns("unl-sb") as n:
        yield n


@pytest.fixture
def handle(node: Netns) -> Iterator[NetnsHandle]:
    h = NetnsHandle(node.fd)
    try:
        yield h
    finally:
        h.close()


class HeldCleanup:
    """Stands in for ``Unlinker._delete``: the real delete, then a wait standing for the kernel's
    clean-up, held until ``released`` is set; ``finished`` once the deleter is done."""

    def __init__(self) -> None:
        self.released, self.finished = threading.Event(), threading.Event()
        self._real = Unlinker._delete

    def run(self, unlinker: Unlinker, *args: object) -> bool:
        try:
            self._real(unlinker, *args)
            return self.released.wait(10)
        finally:
            self.finished.set()


@pytest.fixture
def held(monkeypatch: pytest.MonkeyPatch) -> Iterator[HeldCleanup]:
    gate = HeldCleanup()

    def held_delete(unlinker: Unlinker, *args: object) -> bool:     # a function: bound as the method
        return gate.run(unlinker, *args)

    monkeypatch.setattr(Unlinker, "_delete", held_delete)
    try:
        yield gate
    finally:
        gate.released.set()


def pair(node: Netns, sandbox: Netns, host: str = "cnu0") -> int:
    sh("ip", "-n", node.name, "link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", sandbox.name)
    info = link(node, host)
    assert info is not None
    return int(info["ifindex"])


def kernel(handle: NetnsHandle) -> Kernel:
    return Kernel(handle.socket(), "in the test node", handle.discard)


def test_delete_returns_while_the_deleter_is_still_in_the_kernel(node: Netns, sandbox: Netns,
                                                                 handle: NetnsHandle, held: HeldCleanup) -> None:
    index = pair(node, sandbox)
    unlinker = Unlinker(handle, "in the test node")
    try:
        assert unlinker.delete(kernel(handle), index, "cnu0") is True
        returned_early = not held.finished.is_set()
        assert link(node, "cnu0") is None and link_names(sandbox) == {"lo"}, "both ends are gone at return"
    finally:
        held.released.set()
        unlinker.close()
    assert returned_early, "delete() waited for the deleter instead of for the link to go"
    assert held.finished.is_set(), "close() waits for the deletes in flight"


def test_a_failed_delete_is_the_callers_error(node: Netns, sandbox: Netns, handle: NetnsHandle,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    index = pair(node, sandbox)

    def refused(self: Unlinker, i: int, ifname: str, *rest: object) -> bool:
        raise DataplaneError(f"deleting link {ifname} failed: Operation not permitted")

    monkeypatch.setattr(Unlinker, "_delete", refused)
    unlinker = Unlinker(handle, "in the test node")
    try:
        with pytest.raises(DataplaneError, match="deleting link cnu0 failed"):
            unlinker.delete(kernel(handle), index, "cnu0")
    finally:
        unlinker.close()
    assert link(node, "cnu0") is not None, "nothing was deleted"


def test_a_real_delete_and_one_already_gone(node: Netns, sandbox: Netns, handle: NetnsHandle) -> None:
    index = pair(node, sandbox)
    unlinker = Unlinker(handle, "in the test node")
    try:
        assert unlinker.delete(kernel(handle), index, "cnu0") is True
        assert link(node, "cnu0") is None and link_names(sandbox) == {"lo"}
        unlinker.delete(kernel(handle), index, "cnu0")     # gone already: no error (True or False)
        other = pair(node, sandbox, "cnu1")
        assert unlinker.delete(kernel(handle), other, "cnu1") is True
    finally:
        unlinker.close()
    assert link(node, "cnu1") is None
    with pytest.raises(DataplaneError, match="closed"):
        unlinker.delete(kernel(handle), index, "cnu0")


def test_a_delete_in_another_netns_gets_its_own_socket(node: Netns, sandbox: Netns, handle: NetnsHandle,
                                                       held: HeldCleanup) -> None:
    """A sandbox's link (a macvlan child, say): the deleter's socket is opened by the caller while
    the sandbox's descriptor is valid, and the caller again comes back before the deleter does."""
    sh("ip", "-n", sandbox.name, "link", "add", "cnu2", "type", "veth", "peer", "name", "cnu3")
    info = link(sandbox, "cnu2")
    assert info is not None
    unlinker = Unlinker(handle, "in the test node")
    with contextlib.closing(netns_socket(sandbox.fd)) as sock:
        try:
            assert unlinker.delete(Kernel(sock, "in the test sandbox"), int(info["ifindex"]), "cnu2",
                                   netns_fd=sandbox.fd) is True
            returned_early = not held.finished.is_set()
            assert link_names(sandbox) == {"lo"} and link(node, "cnu2") is None
        finally:
            held.released.set()
            unlinker.close()
    assert returned_early, "delete() waited for the deleter instead of for the link to go"
