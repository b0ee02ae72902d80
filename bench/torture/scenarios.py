"""The scenarios the runner and the tests share: kill cycles on a standalone node (bridge
and routed) and on a Neutron node (with and without a warm pool), and the 20-way rounds."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.torture import cycles, neutron
from bench.torture.node import Rig, rig, standalone_nets
from bench.torture.parallel import Rounds, run_rounds

Log = Callable[[str], None]


@dataclass(frozen=True)
class Plan:
    random_cycles: int          # random kills per node
    inflight: int = 6           # requests in flight at a random kill
    keep_live: int = 2          # long-lived attachments per network, checked after every restart
    sandboxes: int = 16


def kill_node(r: Rig, plan: Plan, rng: random.Random, log: Log) -> cycles.Tally:
    tally = cycles.Tally()
    cycles.populate(r, plan.keep_live, tally)
    cycles.check_now(r, tally, "populating")
    for network in sorted(r.nets):
        for point in cycles.points():
            cycles.point_cycle(r, network, point, tally, log)
    log(f"  named points: {tally.cycles} kills, {len(tally.points_hit)} points, {len(tally.violations)} violations")
    for i in range(plan.random_cycles):
        cycles.random_cycle(r, rng, tally, plan.inflight, max_delay=0.15)
        if (i + 1) % 10 == 0:
            log(f"  random kills: {i + 1}/{plan.random_cycles}, {len(tally.violations)} violations, "
                f"{len(tally.errors)} errors")
    cycles.drain(r, tally)
    return tally


def standalone(work: Path, plan: Plan, rng: random.Random, log: Log, pool: bool = False) -> cycles.Tally:
    with rig(work, standalone_nets(pool=pool), sandboxes=plan.sandboxes) as r:
        try:
            return kill_node(r, plan, rng, log)
        except Exception:
            log(r.agent.log_tail())
            raise


def neutron_node(endpoint: str, work: Path, plan: Plan, rng: random.Random, log: Log, *, pool: int = 0,
                 node_name: str = "cnt-torture-node",
                 fake_agent: Callable[[str], None] = neutron.fake_agent) -> cycles.Tally:
    """``fake_agent`` registers the node's L2 agent row at the peer (tests: their peer's own)."""
    fake_agent(node_name)
    with neutron.scratch_network(endpoint) as net:
        extra = neutron.provider_toml(endpoint, net.api.project_id)
        with rig(work, neutron.nets(net.network_id, pool), sandboxes=plan.sandboxes, node_name=node_name,
                 extra=extra, parked=pool > 0, cloud_ports=neutron.cloud_ports(net.api, net.network_id)) as r:
            try:
                return kill_node(r, plan, rng, log)
            except Exception:
                log(r.agent.log_tail())
                raise


def concurrency(work: Path, rounds: int, n: int, width: int, log: Log) -> Rounds:
    with rig(work, standalone_nets(), sandboxes=n) as r:
        return run_rounds(r, rounds, n, width, log)
