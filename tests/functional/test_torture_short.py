"""The short torture (issue 5 item 1) inside ``make test``: SIGKILL the real agent at every
named crash point and at random moments on a standalone node (bridge and routed), restart
it, let the runtime retry, and check the invariants after every restart; and prove that
the invariants themselves fail on deliberately broken state."""

from __future__ import annotations

import random
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from bench.torture import cycles, scenarios
from bench.torture.invariants import checks, violations
from bench.torture.node import Rig, rig, standalone_nets

from cloudnic.crash import POINTS

pytestmark = pytest.mark.functional


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Rig]:
    """A node with one live attachment per network (bridge: sandbox 0, routed: sandbox 1)."""
    with rig(tmp_path, standalone_nets(), sandboxes=4) as r:
        for i, network in enumerate(("tbridge", "trouted")):
            add = r.add(network, r.sandboxes[i])
            assert add.ok, add.describe()
        yield r


def kinds(found: list[str]) -> set[str]:
    return {v.split(":", 1)[0] for v in found}


def ip(node: Rig, ns: str, *args: str) -> None:
    subprocess.run(["ip", "-n", ns, *args], check=True, capture_output=True)


def test_invariants_hold_on_a_healthy_node(node: Rig) -> None:
    assert violations(node.view()) == []


def test_a_leaked_link_in_the_node_is_an_orphan(node: Rig) -> None:
    ip(node, node.node_ns, "link", "add", "cn0123456789a", "type", "veth", "peer", "name", "cnt-leak-p")
    found = violations(node.view())
    assert any(v.startswith("orphan: link cn0123456789a") for v in found), found


def test_a_stray_route_and_neighbour_are_orphans(node: Rig) -> None:
    host = next(lv for lv in node.live.values() if lv.network == "trouted")
    dev = node.agent.admin({"op": "attachments"})["attachments"]
    host_ifname = next(a["host_ifname"] for a in dev if a["key"] == host.key)
    ip(node, node.node_ns, "route", "add", "10.96.0.250/32", "dev", host_ifname)
    ip(node, node.node_ns, "neigh", "add", "10.96.0.251", "lladdr", "02:00:00:00:00:01", "dev", host_ifname,
       "nud", "permanent")
    found = violations(node.view())
    assert any("orphan: host route 10.96.0.250" in v for v in found), found
    assert any("orphan: permanent neighbour 10.96.0.251" in v for v in found), found


def test_the_same_address_on_two_sandboxes_is_a_duplicate(node: Rig) -> None:
    taken = next(lv for lv in node.live.values() if lv.network == "tbridge").result["ips"][0]["address"]
    other = node.sandboxes[2]
    ip(node, other, "link", "add", "dup0", "type", "veth", "peer", "name", "dup1")
    ip(node, other, "addr", "add", taken, "dev", "dup0")
    found = violations(node.view())
    assert "duplicate-ip" in kinds(found) and "orphan" in kinds(found), found


def test_a_deleted_store_row_is_found(node: Rig) -> None:
    victim = next(lv for lv in node.live.values() if lv.network == "trouted")
    db = sqlite3.connect(node.agent.db_path)
    with db:
        db.execute("DELETE FROM attachments WHERE key = ?", (victim.key,))
    db.close()
    found = violations(node.view())
    # the runtime still holds it, its port row dangles, its host link, routes and sandbox link have no row
    assert {"state", "leaked-port", "orphan"} <= kinds(found), found
    assert any(f"the runtime holds {victim.key}" in v for v in found), found


def test_a_port_unknown_to_the_agent_is_a_leak(node: Rig) -> None:
    victim = next(lv for lv in node.live.values() if lv.network == "tbridge")
    db = sqlite3.connect(node.agent.db_path)
    with db:
        db.execute("DELETE FROM ports WHERE attachment_key = ?", (victim.key,))
    db.close()
    assert "leaked-port" in kinds(violations(node.view()))


def test_missing_kernel_objects_and_a_failing_check_are_found(node: Rig) -> None:
    bridged = next(lv for lv in node.live.values() if lv.network == "tbridge")
    ip(node, bridged.netns, "addr", "flush", "dev", "eth0", "scope", "global")
    found = violations(node.view())
    assert any(v.startswith("missing:") and bridged.key in v for v in found), found
    # CHECK through the real shim (run by violations() only once nothing else is wrong) fails too
    assert any(v.startswith("check:") and bridged.key in v for v in checks(node.view())), found


def test_kill_at_every_point_and_at_random_leaks_nothing(tmp_path: Path) -> None:
    plan = scenarios.Plan(random_cycles=6, inflight=6, keep_live=1, sandboxes=12)
    tally = scenarios.standalone(tmp_path, plan, random.Random(5), print)
    assert tally.violations == [], "\n".join(tally.violations[:30])
    assert tally.errors == [], "\n".join(tally.errors)
    # every point of ADD, the dataplane's plug and DEL fires on a standalone node (others: the provider's)
    standalone = {p for p in POINTS if p.split(":")[0] in ("add", "plug", "del")}
    assert standalone <= tally.points_hit, (sorted(standalone - tally.points_hit), tally.not_reached)
    assert tally.cycles >= len(standalone) + 6
    assert set(cycles.points()) == set(POINTS)


def test_a_pool_hit_killed_before_the_journal_knows_its_port_leaks_nothing(tmp_path: Path) -> None:
    """The pool marks its port ``assigned`` to the ADD before the ADD journals the port id;
    a kill in between must not strand the port (nor its address) outside every pool."""
    with rig(tmp_path, standalone_nets(pool=True), sandboxes=3) as r:
        tally = cycles.Tally()
        cycles.check_now(r, tally, "start")
        cycles.point_cycle(r, "tpool", "add:port-created", tally, print)
        assert "add:port-created" in tally.points_hit
        assert tally.errors == [], tally.errors
        assert tally.violations == [], "\n".join(tally.violations)
