"""Kill cycles: ADD/DEL (and CHECK) with the agent SIGKILLed (a) at every named crash point
and (b) at random moments with several requests in flight; after each kill the agent is
restarted, the runtime retries as a real one does (a failed ADD gets its DEL, a failed DEL
is retried; both must succeed), and the invariants are checked.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench import netns as bnetns
from bench.torture import cni
from bench.torture.invariants import Live, settle
from bench.torture.node import Rig
from cloudnic import crash


@dataclass
class Tally:
    cycles: int = 0                     # kills followed by a restart and an invariant check
    points_hit: set[str] = field(default_factory=set)
    not_reached: dict[str, list[str]] = field(default_factory=dict)   # point -> networks it never fired on
    violations: list[str] = field(default_factory=list)       # distinct; each with where it was first seen
    seen: set[str] = field(default_factory=set)
    recurrences: int = 0                                        # later checks that found a known one again
    errors: list[str] = field(default_factory=list)                   # a retried DEL failed, and the like
    requests: int = 0
    invariant_checks: int = 0

    def merge(self, other: Tally) -> None:
        self.cycles += other.cycles
        self.points_hit |= other.points_hit
        for p, nets in other.not_reached.items():
            self.not_reached.setdefault(p, []).extend(nets)
        self.violations += other.violations
        self.seen |= other.seen
        self.recurrences += other.recurrences
        self.errors += other.errors
        self.requests += other.requests
        self.invariant_checks += other.invariant_checks


def points() -> tuple[str, ...]:
    """Every named crash point, read when called (other engineers add points)."""
    return tuple(crash.POINTS)


def await_recheck(rig: Rig, limit_s: float = 90.0) -> None:
    """Let the agent finish the reconcile its recovery scheduled for a create the killed agent
    may have had in flight (``recheck_pending_s`` in its status): until then such a port is
    legitimately unknown to the store."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        try:
            if not rig.agent.admin({"op": "status"}).get("recheck_pending_s"):
                return
        except Exception:          # the agent is down (killed on purpose): nothing to wait for
            return
        time.sleep(0.5)


def check_now(rig: Rig, tally: Tally, context: str, in_doubt: frozenset[str] = frozenset(),
              settle_s: float = 5.0) -> None:
    tally.invariant_checks += 1
    await_recheck(rig)
    found = settle(rig.view(in_doubt), timeout=settle_s, known=frozenset(tally.seen))
    tally.recurrences += sum(1 for v in found if v in tally.seen)
    tally.violations += [f"{v} [first after {context}]" for v in found if v not in tally.seen]
    tally.seen |= set(found)


def restart(rig: Rig, tally: Tally, context: str, in_doubt: frozenset[str] = frozenset()) -> None:
    rig.agent.kill()
    rig.agent.start()
    check_now(rig, tally, context, in_doubt)


def populate(rig: Rig, per_network: int, tally: Tally) -> None:
    """Long-lived attachments that must survive every crash (and pass CHECK after each)."""
    for network in rig.nets:
        for _ in range(per_network):
            r = rig.add(network, rig.free_sandboxes()[0])
            tally.requests += 1
            if not r.ok:
                tally.errors.append(f"populate {network}: {r.describe()}")


def _retry_del(rig: Rig, tally: Tally, network: str, sandbox: str, cid: str, why: str) -> None:
    d = rig.delete(network, sandbox, cid)
    tally.requests += 1
    if not d.ok:
        tally.errors.append(f"the runtime's DEL of {network}/{cid} ({why}) failed after the restart: "
                            f"{d.describe()}")


def wait_pools(rig: Rig, timeout: float = 60.0) -> None:
    """Until every pool of the agent holds its target of ready ports (so an ADD is a pool hit)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pools = rig.agent.admin({"op": "pools"}).get("pools", [])
        if all(int(p.get("ready", 0)) >= int(p.get("target", 0)) for p in pools):
            return
        time.sleep(0.1)


def point_cycle(rig: Rig, network: str, point: str, tally: Tally, log: Callable[[str], None]) -> None:
    """Arm ``point``, ADD then DEL one sandbox; whichever request the kill hits is retried.
    A pooled network is given a full pool first, so the ADD is a pool hit."""
    rig.agent.stop()
    rig.agent.start(crash_at=point)
    wait_pools(rig)
    sandbox = rig.free_sandboxes()[0]
    cid = rig.next_cid()
    r = rig.add(network, sandbox, cid)
    tally.requests += 1
    ctx = f"{point} on {network}"
    doubt = frozenset({f"{network}/{cid}/eth0"})
    if not r.ok:
        if rig.agent.wait_dead(15) is None:
            tally.errors.append(f"ADD with {point} armed failed without a kill: {r.describe()}")
        restart(rig, tally, f"ADD killed at {ctx} (before the runtime's DEL)", doubt)
        tally.cycles += 1
        tally.points_hit.add(point)
        _retry_del(rig, tally, network, sandbox, cid, "after a failed ADD")
        check_now(rig, tally, f"ADD killed at {ctx} and its DEL")
        return
    d = rig.delete(network, sandbox, cid)
    tally.requests += 1
    if not d.ok:
        if rig.agent.wait_dead(15) is None:
            tally.errors.append(f"DEL with {point} armed failed without a kill: {d.describe()}")
        held = rig.live.pop(f"{network}/{cid}/eth0")       # the runtime retries; until then: either way
        restart(rig, tally, f"DEL killed at {ctx} (before the retry)", doubt)
        rig.live[held.key] = held
        tally.cycles += 1
        tally.points_hit.add(point)
        _retry_del(rig, tally, network, sandbox, cid, "retried")
        check_now(rig, tally, f"DEL killed at {ctx} and its retry")
        return
    if not rig.agent.alive():            # killed in the background (a pool refill): still a cycle
        tally.cycles += 1
        tally.points_hit.add(point)
        restart(rig, tally, f"background kill at {ctx}")
        return
    tally.not_reached.setdefault(point, []).append(network)
    log(f"  {point}: not reached on {network}")
    rig.agent.stop()
    rig.agent.start()


@dataclass(frozen=True)
class Op:
    command: str
    network: str
    sandbox: str
    cid: str
    prev: Live | None = None


def random_cycle(rig: Rig, rng: random.Random, tally: Tally, inflight: int = 6, max_delay: float = 0.25) -> int:
    """Several requests in flight; SIGKILL after a random delay; restart; the runtime retries.
    Returns how many requests had not finished when the agent died."""
    if not rig.agent.alive():
        rig.agent.start()
    ops: list[Op] = []
    free = rig.free_sandboxes()
    rng.shuffle(free)
    lives = list(rig.live.values())
    rng.shuffle(lives)
    networks = sorted(rig.nets)
    for i in range(inflight):
        roll = rng.random()
        if lives and (roll < 0.4 or not free):
            lv = lives.pop()
            ops.append(Op("DEL", lv.network, lv.netns, lv.container_id, lv))
        elif lives and roll < 0.5:
            lv = lives.pop()
            ops.append(Op("CHECK", lv.network, lv.netns, lv.container_id, lv))
        elif free:
            ops.append(Op("ADD", networks[i % len(networks)], free.pop(), rig.next_cid()))
    results: dict[int, cni.CniCall] = {}

    def run(i: int, op: Op) -> None:
        extra: dict[str, Any] = {"prevResult": op.prev.result} if op.command == "CHECK" and op.prev else {}
        args = rig.nets[op.network].args if op.command == "ADD" else ""
        results[i] = cni.call(op.command, cni.conf(op.network, **extra), socket=rig.agent.socket,
                              container_id=op.cid, netns=bnetns.path(op.sandbox), args=args)

    threads = [threading.Thread(target=run, args=(i, op)) for i, op in enumerate(ops)]
    for t in threads:
        t.start()
    time.sleep(rng.uniform(0.0, max_delay))
    unfinished = sum(1 for t in threads if t.is_alive())
    rig.agent.kill()
    for t in threads:
        t.join()
    tally.requests += len(ops)
    rig.agent.start()
    tally.cycles += 1
    retry: list[Op] = []
    for i, op in enumerate(ops):
        r = results[i]
        key = f"{op.network}/{op.cid}/eth0"
        if op.command == "ADD" and r.ok:
            rig.live[key] = Live(key, op.network, op.cid, "eth0", op.sandbox, r.reply())
        elif op.command == "DEL":
            rig.live.pop(key, None)     # done, or the runtime retries it below
        if op.command != "CHECK" and not r.ok:
            retry.append(op)            # ADD failed -> DEL; DEL failed -> DEL again
    doubt = frozenset(f"{op.network}/{op.cid}/eth0" for op in retry)
    check_now(rig, tally, f"a random kill ({unfinished} of {len(ops)} requests in flight), before the retries",
              doubt)
    for op in retry:
        _retry_del(rig, tally, op.network, op.sandbox, op.cid, f"after a killed {op.command}")
    if retry:
        check_now(rig, tally, "the runtime's retries after a random kill")
    return unfinished


def drain(rig: Rig, tally: Tally) -> None:
    """DEL everything still attached, then the final check (nothing may be left)."""
    if not rig.agent.alive():
        rig.agent.start()
    for lv in list(rig.live.values()):
        _retry_del(rig, tally, lv.network, lv.netns, lv.container_id, "final drain")
    check_now(rig, tally, "the final drain")
    st = rig.agent.admin({"op": "status"})
    if st["store"]["attachments"]:
        tally.violations.append(f"state: {st['store']['attachments']} attachments left after the final drain")
