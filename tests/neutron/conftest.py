"""Fixtures for the neutron tests (marker ``neutron``): the real neutron-server peers of scripts/neutron-peer.sh.

Session fixtures:
  * ``neutron``: neutron-server on 127.0.0.1:19696 (noauth, fake transport, PostgreSQL, fresh database), a
    ``NeutronPeer`` (see peer.py); ``down`` at the end, even on failure.
  * ``neutron_lab``: the agent lab in netns ``cnn-lab`` (RabbitMQ, neutron-server, neutron-linuxbridge-agent for host
    ``neutron_lab.agent_host``); ``lab-down`` at the end. The lab listens only on the netns's own loopback, so it
    runs alongside ``neutron`` (same port numbers, another namespace, another directory).
  * ``keystone``: a real Keystone (scripts/keystone-peer.sh, 127.0.0.1:15000) with a counting proxy in front.
Function fixtures: ``neutron_project`` / ``lab_project`` (a fresh project whose resources are all deleted
afterwards). After every test that used a peer, its counting proxy is back to "up" with a clean count and its
neutron-server runs again if the test stopped it.

``CLOUDNIC_NEUTRON_KEEP=1`` (for development): reuse a peer that ``scripts/neutron-peer.sh up`` / ``lab-up``
already started (no fresh database, about 0 s instead of about 10 s / 25 s), and leave it running at the end.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # peer.py and http_counter.py

from keystone_peer import KeystonePeer
from peer import NeutronPeer, Project

KEEP = os.environ.get("CLOUDNIC_NEUTRON_KEEP") == "1"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """On failure, attach the tail of neutron-server's (and the lab agent's) log to the report."""
    report = yield
    if report.failed:
        for name, value in getattr(item, "funcargs", {}).items():
            peer = value.peer if isinstance(value, Project) else value
            if not isinstance(peer, NeutronPeer):
                continue
            for log in (peer.log_path, peer.agent_log_path):
                if log and log.is_file():
                    tail = log.read_text(errors="replace").splitlines()[-40:]
                    report.sections.append((f"{name}: {log.name} tail ({log})", "\n".join(tail)))
    return report


def _session_peer(peer: NeutronPeer) -> Iterator[NeutronPeer]:
    if os.geteuid() != 0:
        pytest.fail("the neutron tests need root (PostgreSQL, network namespaces, the agent's iptables)")
    reuse = KEEP and peer.log_path.is_file() and peer.running()
    try:
        if reuse:
            peer.counting_endpoint.start()
        else:
            peer.up()
        yield peer
    finally:
        if KEEP:
            peer.counting_endpoint.close()
        else:
            peer.down()
            assert not peer.state_dir.exists(), f"neutron-peer.sh left {peer.state_dir} behind"


@pytest.fixture(scope="session")
def neutron() -> Iterator[NeutronPeer]:
    yield from _session_peer(NeutronPeer.plain())


@pytest.fixture(scope="session")
def neutron_lab() -> Iterator[NeutronPeer]:
    peer = NeutronPeer.lab()
    yield from _session_peer(peer)
    if not KEEP:
        assert not Path(f"/run/netns/{peer.netns}").exists(), f"lab-down left netns {peer.netns} behind"


@pytest.fixture(autouse=True)
def _peer_restored(request: pytest.FixtureRequest) -> Iterator[None]:
    """Each test starts with a clean count; a stopped server or a faulty proxy does not leak into the next test."""
    peers = [request.getfixturevalue(name) for name in ("neutron", "neutron_lab") if name in request.fixturenames]
    for peer in peers:
        peer.counting_endpoint.up()
        peer.counting_endpoint.reset()
    yield
    for peer in peers:
        peer.counting_endpoint.up()
        if not peer.running():
            peer.start()


@pytest.fixture
def neutron_project(neutron: NeutronPeer, request: pytest.FixtureRequest) -> Iterator[Project]:
    with neutron.project(request.node.name[:20]) as project:
        yield project


@pytest.fixture
def lab_project(neutron_lab: NeutronPeer, request: pytest.FixtureRequest) -> Iterator[Project]:
    with neutron_lab.project(request.node.name[:20]) as project:
        yield project


# ---- Keystone (tests/neutron/keystone_peer.py): used by test_keystone.py and test_neutron_secrets.py ----


@pytest.fixture(scope="session")
def keystone() -> Iterator[KeystonePeer]:
    if os.geteuid() != 0:
        pytest.fail("the keystone tests need root (apt-get, the peer's directory)")
    peer = KeystonePeer()
    try:
        peer.up()
        yield peer
    finally:
        peer.down()
        if not KEEP:
            assert not peer.directory.exists(), f"keystone-peer.sh left {peer.directory} behind"


@pytest.fixture(autouse=True)
def _keystone_restored(request: pytest.FixtureRequest) -> Iterator[None]:
    if "keystone" in request.fixturenames:
        peer: KeystonePeer = request.getfixturevalue("keystone")
        peer.counting.up()
        peer.counting.reset()
        yield
        peer.counting.up()
    else:
        yield
