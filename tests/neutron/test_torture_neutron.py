"""The short Neutron torture: the real agent with the neutron provider against the real
neutron-server, SIGKILLed at every named point and at random moments, with and without a
warm pool; after every restart no port of this node's project may be neither assigned nor
pooled (asked of neutron-server itself), and the kernel and the store must agree."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from bench.torture import scenarios
from peer import NeutronPeer

from cloudnic.crash import POINTS

pytestmark = pytest.mark.neutron

NODE = "cnt-torture-node"


@pytest.mark.parametrize("pool", [0, 3], ids=["no-pool", "pool3"])
def test_kills_leak_no_neutron_port(neutron: NeutronPeer, tmp_path: Path, pool: int) -> None:
    plan = scenarios.Plan(random_cycles=3, inflight=4, keep_live=1, sandboxes=10)
    tally = scenarios.neutron_node(neutron.endpoint, tmp_path, plan, random.Random(7), print, pool=pool,
                                   node_name=NODE, fake_agent=neutron.fake_agent)
    assert tally.violations == [], "\n".join(tally.violations[:30])
    assert tally.errors == [], "\n".join(tally.errors)
    assert {p for p in POINTS if p.startswith(("add:", "del:"))} <= tally.points_hit, tally.not_reached
