"""Warm pools against a real neutron-server, counted at the HTTP layer.

The pool manager talks to Neutron through the real ``NeutronProvider`` pointed at the
peer's counting proxy, so "no Neutron call" and "one bulk POST" are what went over the
wire. Parking (pre-plugging) needs the dataplane and is proven elsewhere
(tests/neutron/test_linuxbridge_agent.py); here the parker is a no-op, so the ports stay
DOWN: these tests are about the pool's Neutron traffic and its bookkeeping. A fake
linuxbridge agent row for the pool's node makes ``binding:host_id`` bind quickly.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from peer import NeutronPeer, Project, ScratchNet

from cloudnic.pool import REFILL_OP, NoParker, PoolKey, PoolManager, PoolPolicy, pool_port_name
from cloudnic.providers.base import PortSpec
from cloudnic.providers.neutron import NeutronProvider, settings_from_table
from cloudnic.store import Store

pytestmark = pytest.mark.neutron

NODE = "cnn-pool-node"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def node(neutron: NeutronPeer) -> str:
    neutron.fake_agent(NODE)
    return NODE


@pytest.fixture
def net(neutron_project: Project) -> ScratchNet:
    return neutron_project.network(cidr="10.77.0.0/24", network_type="vxlan")


class Rig:
    """One node's pool manager on a real Neutron (through the counting proxy) and a store file."""

    def __init__(
        self,
        peer: NeutronPeer,
        project: Project,
        net: ScratchNet,
        node: str,
        db: Path,
        policies: dict[PoolKey, PoolPolicy],
    ) -> None:
        self.peer = peer
        self.project = project
        self.net = net
        self.node = node
        self.db = db
        self.policies = policies
        self.cluster = f"cnn-{secrets.token_hex(3)}"
        self.clock = Clock()
        self.provider: NeutronProvider | None = None
        self.store: Store | None = None

    def manager(self) -> PoolManager:
        """A fresh provider, store handle and manager: what an agent (re)start builds."""
        self.close()
        self.provider = NeutronProvider(
            settings_from_table(
                {
                    "type": "neutron",
                    "auth_type": "noauth",
                    "endpoint": self.peer.counting_endpoint.url,
                    "project_id": self.project.id,
                    "timeout_s": 30,
                    "retries": 1,
                    "backoff_base_s": 0.05,
                    "backoff_max_s": 0.1,
                }
            )
        )
        self.store = Store(self.db)
        return PoolManager(
            self.provider,
            self.store,
            node=self.node,
            cluster_id=self.cluster,
            spec_for=self.spec,
            parker=NoParker(),
            policy_for=self.policies.get,
            clock=self.clock,
            provider_name="neutron",
        )

    @staticmethod
    def spec(key: PoolKey) -> PortSpec:
        return PortSpec(
            network_id=key.network_id,
            subnet_ids=(key.subnet_id,) if key.subnet_id else (),
            security_groups=key.security_groups,
        )

    def owned(self) -> dict[str, Any]:
        """This node's ports as Neutron has them, by tags (read with the test's own client)."""
        tags = f"cloudnic:cluster={self.cluster},cloudnic:node={self.node}"
        return {p.id: p for p in self.peer.conn().network.ports(tags=tags)}

    def close(self) -> None:
        if self.provider is not None:
            self.provider.close()
            self.provider = None
        if self.store is not None:
            self.store.close()
            self.store = None


@pytest.fixture
def rig(neutron: NeutronPeer, neutron_project: Project, net: ScratchNet, node: str, tmp_path: Path) -> Iterator[Rig]:
    key = PoolKey(net.network_id, net.subnet_id, (net.security_group_id,))
    r = Rig(
        neutron, neutron_project, net, node, tmp_path / "state.db", {key: PoolPolicy(min_ready=4, max_idle=8, batch=4)}
    )
    try:
        yield r
    finally:
        r.close()


def key_of(net: ScratchNet, *sgs: str) -> PoolKey:
    return PoolKey(net.network_id, net.subnet_id, sgs or (net.security_group_id,))


def test_prewarm_is_one_post_and_hits_and_returns_make_no_neutron_request(rig: Rig) -> None:
    counter = rig.peer.counting_endpoint
    key = key_of(rig.net)
    mgr = rig.manager()
    counter.reset()
    stats = mgr.prewarm([key])
    assert counter.counts().get("POST /v2.0/ports") == 1, counter.counts()
    assert stats[0]["ready"] == 4 and stats[0]["refill_errors"] == 0
    owned = rig.owned()
    assert len(owned) == 4
    for port in owned.values():
        assert port.binding_host_id == rig.node
        assert port.device_owner == "compute:cloudnic"
        assert port.name == pool_port_name(rig.cluster, rig.node)
        assert port.security_group_ids == [rig.net.security_group_id]
        assert [ip["subnet_id"] for ip in port.fixed_ips] == [rig.net.subnet_id]

    counter.reset()
    got = [mgr.acquire(key, attachment_key=f"pods/c{i}/eth0") for i in range(4)]
    assert mgr.acquire(key) is None
    assert counter.total() == 0, counter.counts()
    ids = {p.id for p in got if p is not None}
    assert ids == set(owned)
    assert rig.store is not None
    assert {r.port_id for r in rig.store.list_ports(state="assigned")} == ids

    port = got[0]
    assert port is not None
    assert mgr.release(port, key) == "pooled"
    assert counter.total() == 0, counter.counts()
    assert mgr.acquire(key) == port


def test_the_pool_serves_while_neutron_is_down_and_refills_after(rig: Rig) -> None:
    counter = rig.peer.counting_endpoint
    key = key_of(rig.net)
    mgr = rig.manager()
    mgr.prewarm([key])
    counter.down()
    try:
        assert mgr.acquire(key) is not None and mgr.acquire(key) is not None
        mgr.maintain()  # below min_ready: the refill fails and backs off
        st = mgr.stats()[0]
        assert st["refill_errors"] == 1 and st["backoff_s"] > 0 and st["ready"] == 2
        assert mgr.acquire(key) is not None
    finally:
        counter.up()
    rig.clock.now += 120
    counter.reset()
    mgr.maintain()
    st = mgr.stats()[0]
    assert st["ready"] == 5 and counter.counts().get("POST /v2.0/ports") == 1, (st, counter.counts())
    assert rig.store is not None and rig.store.journal_pending() == []
    assert len(rig.owned()) == 8


def test_rekey_is_one_put(rig: Rig, neutron_project: Project) -> None:
    counter = rig.peer.counting_endpoint
    blue = key_of(rig.net)
    other = neutron_project.security_group(rules=[{"protocol": "tcp", "port_range_min": 80, "port_range_max": 80}])
    red = key_of(rig.net, other.id)
    rig.policies[red] = PoolPolicy(min_ready=0, max_idle=4, batch=1)
    mgr = rig.manager()
    mgr.prewarm([blue, red])
    counter.reset()
    port = mgr.acquire(red, attachment_key="pods/r/eth0")
    assert port is not None
    assert counter.counts() == {f"PUT /v2.0/ports/{port.id}": 1}
    assert rig.peer.conn().network.get_port(port.id).security_group_ids == [other.id]
    stats = {s["key"]: s for s in mgr.stats()}
    assert stats[red.label]["rekeys"] == 1 and stats[blue.label]["ready"] == 3


def test_restart_rebuilds_from_neutron_by_tags_without_leaks_or_duplicates(rig: Rig, neutron_project: Project) -> None:
    key = key_of(rig.net)
    first = rig.manager()
    first.prewarm([key])
    assigned = first.acquire(key, attachment_key="pods/c1/eth0")
    assert assigned is not None
    assert rig.store is not None and rig.provider is not None
    # the agent dies in a refill after Neutron made the ports and before the store heard of them
    rig.store.journal_begin(REFILL_OP, key.encode(), {"count": 2})
    interrupted = {p.id for p in rig.provider.create_ports(first.refill_spec(key), 2)}
    # and a port of this node with groups no pool uses (a leftover of an old config)
    odd = neutron_project.security_group()
    stray = rig.provider.create_ports(
        PortSpec(network_id=rig.net.network_id, security_groups=(odd.id,), host_id=rig.node, tags=first.owner_tags()), 1
    )[0]
    before = set(rig.owned())
    assert len(before) == 4 + 2 + 1

    mgr = rig.manager()
    report = mgr.rebuild([key])
    assert (report.loaded, report.kept, report.adopted, report.deleted, report.refills_resolved) == (3, 3, 2, 1, 1)
    assert report.provider_error == ""
    owned = rig.owned()
    assert set(owned) == before - {stray.id}
    assert rig.store is not None
    rows = {r.port_id: r for r in rig.store.list_ports()}
    assert set(rows) == set(owned)  # no leak either way
    assert rows[assigned.id].state == "assigned"
    assert {pid for pid, r in rows.items() if r.state == "pooled"} == set(owned) - {assigned.id}
    assert interrupted <= set(rows)
    assert rig.store.journal_pending() == []
    assert mgr.stats()[0]["ready"] == 5

    counter = rig.peer.counting_endpoint
    counter.reset()
    got = {p.id for p in (mgr.acquire(key) for _ in range(6)) if p is not None}
    assert len(got) == 5 and assigned.id not in got and counter.total() == 0  # no duplicate hand-out

    again = rig.manager().rebuild([key])
    assert (again.loaded, again.adopted, again.deleted, again.dropped) == (0, 0, 0, 0)
    assert set(rig.owned()) == set(owned)
