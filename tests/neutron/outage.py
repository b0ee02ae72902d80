"""Scenario: neutron-server stopped during churn (issue 5, item 2), reusable by tests and by bench/torture.

    figures = run_outage(agent, peer, project, outage_s=60)

``agent`` is a running cloudnic-agent (``tests.support.agent.AgentHandle``) whose network ``network`` (config name,
default "npods") is a Neutron network with a warm pool (``min_ready`` > 0) and whose provider talks to ``peer``
(``peer.endpoint`` or its counting proxy); ``peer`` is the ``NeutronPeer`` to stop and start; ``project`` the
``Project`` the network lives in (its ports are counted at the end). ``outage_agent()`` below starts such an agent.

What happens, every CNI call through the real shim (``tests.support.cni.run_cni``):
  1. wait until the pool is full, then stop neutron-server (``peer.stop()``: its process group is gone, so
     connections are refused);
  2. ADD while the pool has ready ports: each must be served (pool hit);
  3. until ``outage_s`` has passed: STATUS, then an ADD that misses the pool (it must fail with CNI code 11 and a
     message naming Neutron and its endpoint, quickly), then the DEL a runtime sends after a failed ADD (must
     succeed), about one round every ``round_s``;
  4. start neutron-server again and, with no agent restart, wait until an ADD succeeds, STATUS answers 0 and the
     pool is back at its target: ``recovered_s`` counts from the server answering again;
  5. DEL every sandbox of the scenario and remove its netns.

STATUS semantics (CNI 1.1 STATUS): the agent reports 50 ("plugin not available: cannot serve ADD") when the provider
is unreachable and the network's pool has no ready port; while ready ports remain it answers 0 because ADDs are
still being served. So ``status_reported_down`` is true when a STATUS of step 3 (pool drained) answered 50.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
for _p in (str(HERE), str(REPO)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from peer import NeutronPeer, Project, ScratchNet  # noqa: E402

from tests.support.agent import AgentHandle, agent_config, start_agent  # noqa: E402
from tests.support.cni import CNIRun, run_cni  # noqa: E402
from tests.support.cni import unique as uniq  # noqa: E402

NODE = "cnn-node-host"       # the node name (binding:host_id) of outage_agent(); peer.fake_agent(NODE) binds it
SHIM_TIMEOUT_S = 90.0        # shim/cloudnic.c DEFAULT_TOTAL_MS


@dataclass(frozen=True)
class OutageFigures:
    outage_s: float                  # how long neutron-server was down (stop returned -> start called)
    pool_hits_ok: int                # ADDs served from the warm pool during the outage
    pool_hits_failed: int
    misses: int                      # ADDs made after the pool ran dry, during the outage
    misses_code11: int               # ... that failed with CNI code 11 (try again later)
    miss_max_ms: float               # the slowest of those ADDs (must be far below the shim's timeout)
    status_reported_down: bool       # a STATUS with the pool dry answered 50
    recovered_s: float | None        # server answering -> ADD ok + STATUS 0 + pool at target (None: never)
    # details for the report and the assertions
    status_codes: tuple[int, ...] = ()          # every STATUS of step 3 (0 = ok)
    miss_messages: tuple[str, ...] = ()         # distinct error messages of the misses
    miss_dels_failed: int = 0                   # DELs after failed ADDs that did not answer 0
    hit_errors: tuple[str, ...] = ()
    pool_target: int = 0
    dels_failed_at_end: int = 0
    ports_leaked: int = -1                      # Neutron ports of the project after the final DELs, beyond the pool
    errors: tuple[str, ...] = field(default=())


def conf(network: str = "npods", version: str = "1.1.0") -> dict[str, Any]:
    return {"cniVersion": version, "name": network, "type": "cloudnic", "network": network}


def agent_toml(endpoint: str, project: Project, net: ScratchNet, *, min_ready: int = 3, network: str = "npods",
               extra_provider: str = "") -> str:
    """The [provider] and [networks.<network>] tables of an agent with a warm pool on ``net``."""
    return f"""
[provider]
type = "neutron"
auth_type = "noauth"
endpoint = "{endpoint}"
project_id = "{project.id}"
timeout_s = 20
{extra_provider}

[networks.{network}]
mode = "linuxbridge"
neutron_network = "{net.network_id}"
security_groups = ["{net.security_group_id}"]

[networks.{network}.pool]
min_ready = {min_ready}
max_idle = {min_ready}
batch = {min_ready}
"""


@contextlib.contextmanager
def outage_agent(peer: NeutronPeer, project: Project, tmp_dir: Path, net: ScratchNet, *, min_ready: int = 3,
                 via_counter: bool = False, extra_provider: str = "") -> Iterator[AgentHandle]:
    """A running agent (node netns of its own) with a pool of ``min_ready`` on ``net``; stopped at exit."""
    from tests.support.agent import stop_agent
    from tests.support.cni import netns

    peer.fake_agent(NODE)
    endpoint = peer.counting_endpoint.url if via_counter else peer.endpoint
    with netns(uniq("cnn-onode-")) as node:
        text = agent_config(tmp_dir, agent_toml(endpoint, project, net, min_ready=min_ready,
                                                extra_provider=extra_provider),
                            host_netns=f"/run/netns/{node}").replace('node_name = "test-node"', f'node_name = "{NODE}"')
        agent = start_agent(tmp_dir, text, timeout=120)
        try:
            yield agent
        finally:
            stop_agent(agent)


def pool_ready(agent: AgentHandle) -> tuple[int, int]:
    """(ready, target) summed over the agent's pools (an admin call: no Neutron request)."""
    pools = agent.admin({"op": "pools"})["pools"]
    return sum(int(p["ready"]) for p in pools), sum(int(p["target"]) for p in pools)


def _code(r: CNIRun) -> int:
    if r.code == 0:
        return 0
    try:
        return int(r.json.get("code", -1))
    except ValueError:
        return -1


def run_outage(agent: AgentHandle, peer: NeutronPeer, project: Project, *, network: str = "npods",
               outage_s: float = 60.0, round_s: float = 3.0, recover_timeout_s: float = 240.0,
               log: Callable[[str], None] = lambda _msg: None) -> OutageFigures:
    """Run the scenario (module docstring) and return its figures; the server runs again when it returns."""
    sandboxes: list[tuple[str, str]] = []        # (container id, netns name)
    errors: list[str] = []

    def sandbox(stem: str) -> tuple[str, str]:
        name = uniq("cnn-osb-")
        subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
        sb = (f"{stem}{len(sandboxes)}", name)
        sandboxes.append(sb)
        return sb

    def cni(verb: str, sb: tuple[str, str] | None = None) -> CNIRun:
        if sb is None:
            return run_cni(verb, conf(network), socket=agent.socket, timeout=SHIM_TIMEOUT_S + 10)
        return run_cni(verb, conf(network), socket=agent.socket, container_id=sb[0], netns=f"/run/netns/{sb[1]}",
                       timeout=SHIM_TIMEOUT_S + 10)

    try:
        deadline = time.monotonic() + 120
        ready, target = pool_ready(agent)
        while ready < target and time.monotonic() < deadline:
            time.sleep(0.2)
            ready, target = pool_ready(agent)
        if target == 0 or ready < target:
            raise AssertionError(f"the pool of the agent is not full before the outage ({ready}/{target})")
        peer.stop()
        down_at = time.monotonic()
        log(f"neutron-server stopped; pool {ready}/{target}")
        hits_ok = hits_failed = 0
        hit_errors: list[str] = []
        while pool_ready(agent)[0] > 0 and time.monotonic() - down_at < outage_s:
            r = cni("ADD", sandbox("oh"))
            if r.code == 0:
                hits_ok += 1
            else:
                hits_failed += 1
                hit_errors.append(r.stdout[:300])
        log(f"pool hits: {hits_ok} ok, {hits_failed} failed")
        misses = code11 = miss_dels_failed = 0
        miss_max_ms = 0.0
        statuses: list[int] = []
        messages: list[str] = []
        while time.monotonic() - down_at < outage_s:
            started = time.monotonic()
            statuses.append(_code(cni("STATUS")))
            sb = sandbox("om")
            t0 = time.monotonic()
            r = cni("ADD", sb)
            miss_max_ms = max(miss_max_ms, (time.monotonic() - t0) * 1000)
            misses += 1
            if r.code != 0:
                code11 += _code(r) == 11
                msg = str(r.json.get("msg", "")) if r.stdout.strip().startswith("{") else r.stdout[:300]
                if msg not in messages:
                    messages.append(msg)
                if cni("DEL", sb).code != 0:
                    miss_dels_failed += 1
            else:
                errors.append(f"an ADD with the pool dry succeeded during the outage ({sb[0]})")
            time.sleep(max(0.0, min(round_s - (time.monotonic() - started), outage_s - (time.monotonic() - down_at))))
        peer.start()
        up_at = time.monotonic()
        outage = up_at - down_at
        log(f"neutron-server back after {outage:.1f} s; {misses} misses ({code11} code 11), statuses {set(statuses)}")
        recovered_s = None
        add_ok = False
        while time.monotonic() - up_at < recover_timeout_s:
            if not add_ok:
                add_ok = cni("ADD", sandbox("or")).code == 0
            if add_ok and cni("STATUS").code == 0:
                ready, target = pool_ready(agent)
                if ready >= target:
                    recovered_s = time.monotonic() - up_at
                    break
            time.sleep(0.5)
        log(f"recovered in {recovered_s} s" if recovered_s is not None else "did not recover")
        dels_failed = sum(cni("DEL", sb).code != 0 for sb in sandboxes)
        ready, target = pool_ready(agent)
        left = len(project.ports())
        return OutageFigures(
            outage_s=round(outage, 1), pool_hits_ok=hits_ok, pool_hits_failed=hits_failed, misses=misses,
            misses_code11=code11, miss_max_ms=round(miss_max_ms, 1), status_reported_down=50 in statuses,
            recovered_s=None if recovered_s is None else round(recovered_s, 1), status_codes=tuple(statuses),
            miss_messages=tuple(messages), miss_dels_failed=miss_dels_failed, hit_errors=tuple(hit_errors),
            pool_target=target, dels_failed_at_end=dels_failed, ports_leaked=left - ready, errors=tuple(errors))
    finally:
        if not peer.running():
            peer.start()
        for _cid, name in sandboxes:
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


__all__ = ["NODE", "OutageFigures", "agent_toml", "conf", "outage_agent", "pool_ready", "run_outage"]
