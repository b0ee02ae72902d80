"""Concurrency (issue 5 item 4): N sandboxes ADDed, then DELeted, W-way in parallel (threads
exec'ing the real shim) against one agent, several rounds: errors, duplicate addresses and
leftovers (the invariants after each round) are counted; each must be 0."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from bench import netns as bnetns
from bench.torture import cni
from bench.torture.invariants import Live, count, settle
from bench.torture.node import Rig


@dataclass
class Rounds:
    rounds: int = 0
    requests: int = 0
    errors: list[str] = field(default_factory=list)
    duplicate_ips: int = 0
    leftovers: list[str] = field(default_factory=list)      # invariant violations after a round's DELs
    violations: list[str] = field(default_factory=list)     # ... after its ADDs


def _ips(result: dict[str, object]) -> list[str]:
    ips = result.get("ips", [])
    assert isinstance(ips, list)
    return [str(ipaddress.ip_interface(i["address"]).ip) for i in ips]


def one_round(rig: Rig, network: str, n: int, width: int, tally: Rounds, check_each: bool = True) -> None:
    sandboxes = rig.sandboxes[:n]
    cids = [rig.next_cid() for _ in sandboxes]

    def add(i: int) -> cni.CniCall:
        return cni.call("ADD", cni.conf(network), socket=rig.agent.socket, container_id=cids[i],
                        netns=bnetns.path(sandboxes[i]), args=rig.nets[network].args)

    def delete(i: int) -> cni.CniCall:
        return cni.call("DEL", cni.conf(network), socket=rig.agent.socket, container_id=cids[i],
                        netns=bnetns.path(sandboxes[i]))

    with ThreadPoolExecutor(width) as pool:
        adds = list(pool.map(add, range(len(sandboxes))))
    tally.requests += len(adds)
    holders: dict[str, list[str]] = {}
    for i, r in enumerate(adds):
        if not r.ok:
            tally.errors.append(f"round {tally.rounds} {network} ADD {cids[i]}: {r.describe()}")
            continue
        key = f"{network}/{cids[i]}/eth0"
        rig.live[key] = Live(key, network, cids[i], "eth0", sandboxes[i], r.reply())
        for ip in _ips(r.reply()):
            holders.setdefault(ip, []).append(cids[i])
    dups = {ip: who for ip, who in holders.items() if len(who) > 1}
    tally.duplicate_ips += len(dups)
    tally.errors += [f"round {tally.rounds} {network}: {ip} handed to {', '.join(w)}" for ip, w in dups.items()]
    if check_each:
        found = settle(rig.view(), timeout=10)
        tally.duplicate_ips += count(found, "duplicate-ip")
        tally.violations += [f"{v} [round {tally.rounds} {network}, all added]" for v in found]
    with ThreadPoolExecutor(width) as pool:
        dels = list(pool.map(delete, range(len(sandboxes))))
    tally.requests += len(dels)
    for i, r in enumerate(dels):
        if r.ok:
            rig.live.pop(f"{network}/{cids[i]}/eth0", None)
        else:
            tally.errors.append(f"round {tally.rounds} {network} DEL {cids[i]}: {r.describe()}")
    found = settle(rig.view(), timeout=10)
    tally.leftovers += [f"{v} [round {tally.rounds} {network}, all deleted]" for v in found]
    tally.rounds += 1


def run_rounds(rig: Rig, rounds: int, n: int, width: int, log: Callable[[str], None]) -> Rounds:
    tally = Rounds()
    networks = sorted(rig.nets)
    for i in range(rounds):
        network = networks[i % len(networks)]
        one_round(rig, network, n, width, tally)
        log(f"  parallel round {i + 1}/{rounds} ({network}, {n} sandboxes {width}-way): "
            f"{len(tally.errors)} errors, {tally.duplicate_ips} duplicates, {len(tally.leftovers)} leftovers")
    return tally
