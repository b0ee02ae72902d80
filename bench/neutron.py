"""Scenario 7 and the Neutron pool hit of scenario 1: cloudnic against a real neutron-server.

Run by the *outer* process (host netns) after the inner run, because the peer listens on
the host's loopback: the agent runs in the host netns with ``host_netns`` = a node netns
of its own, exactly as tests/neutron does. (Fairness against the reference plugins does
not apply here: these figures compare cloudnic with Neutron's own API.)

The peer: ``NEUTRON_ENDPOINT`` (a noauth neutron-server; ports may stay unbound), else
our own from ``scripts/neutron-peer.sh up`` in a directory and on ports of our own
(``/var/tmp/cnb-neutron``, 127.0.0.1:19896, PostgreSQL 15632) so it never meets the
tests' peers; it goes ``down`` at the end. Without either, every figure is null and
``neutron_note`` says why; the run does not fail.

* ``neutron_port_create_ms``: one ``POST /v2.0/ports`` (as the agent makes it: network,
  device_owner, binding:host_id, name, ownership tags; through the same counting proxy the
  agent talks to, so the proxy's hop is in both figures), p50;
* ``neutron_cold_add_ms``: ADD through the shim with no pool (every ADD creates its port);
  ``neutron_cold_add_overhead_ms`` = cold ADD - port-create (target ≤ 20 ms);
* ``neutron_refill_50_s``: an agent whose pool wants 50 ready ports, from ready to 50
  ports in Neutron; ``neutron_refill_50_posts``: the ``POST /v2.0/ports`` it took (target 1);
* ``neutron_pool_add_*``: ADD p50/p90/p99 from that warm pool (no Neutron call).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import netns
from bench.agent import Agent
from bench.plugins import Sandbox, cloudnic
from bench.stats import Summary

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "neutron-peer.sh"
PEER_ENV = {"NEUTRON_CI_DIR": "/var/tmp/cnb-neutron", "NEUTRON_PORT": "19896", "NEUTRON_PG_PORT": "15632"}
NODE_NAME = "bench-node"
POOL = 50
KEYS = ("neutron_cold_add_ms", "neutron_port_create_ms", "neutron_cold_add_overhead_ms", "neutron_refill_50_s",
        "neutron_refill_50_posts", "neutron_pool_add_p50_ms")


def unavailable(why: str) -> dict[str, Any]:
    out: dict[str, Any] = dict.fromkeys(KEYS)
    out["neutron_note"] = why
    return out


class Api:
    """Just enough of the Neutron v2 API over urllib (noauth: the project goes in the body)."""

    def __init__(self, endpoint: str, project_id: str) -> None:
        self.base = endpoint.rstrip("/")
        self.project_id = project_id

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json", "Accept": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            text = resp.read()
        return json.loads(text) if text else None

    def port_body(self, network_id: str, name: str) -> dict[str, Any]:
        return {"port": {"network_id": network_id, "project_id": self.project_id, "name": name,
                         "device_owner": "compute:cloudnic", "binding:host_id": NODE_NAME}}

    def ports(self, network_id: str) -> list[dict[str, Any]]:
        return list(self.call("GET", f"/v2.0/ports?network_id={network_id}&fields=id")["ports"])


def run(tag: str, samples: int, shim: str, work: Path, log: Callable[[str], None]) -> dict[str, Any]:
    endpoint = os.environ.get("NEUTRON_ENDPOINT", "")
    started = False
    data: dict[str, Any] = {}
    if not endpoint:
        if not SCRIPT.exists():
            return unavailable("not measured: no NEUTRON_ENDPOINT and no scripts/neutron-peer.sh")
        t0 = time.perf_counter()
        env = {**os.environ, **PEER_ENV}
        p = subprocess.run([str(SCRIPT), "up"], env=env, capture_output=True, text=True, timeout=1200)
        if p.returncode != 0:
            subprocess.run([str(SCRIPT), "down"], env=env, capture_output=True, timeout=300)
            return unavailable(f"not measured: neutron-peer.sh up failed: {p.stderr.strip()[-300:]}")
        started = True
        endpoint = p.stdout.strip().splitlines()[-1]
        data["neutron_peer_up_s"] = round(time.perf_counter() - t0, 1)
        subprocess.run([str(SCRIPT), "fake-agent", NODE_NAME], env=env, capture_output=True, timeout=120)
        log(f"neutron peer up at {endpoint} in {data['neutron_peer_up_s']} s")
    try:
        data.update(measure(endpoint, tag, samples, shim, work, log))
        data["neutron_endpoint"] = endpoint
        return data
    except Exception as e:     # a broken peer must not fail the benchmark
        return {**unavailable(f"neutron scenario failed: {type(e).__name__}: {e}"), **data}
    finally:
        if started:
            subprocess.run([str(SCRIPT), "down"], env={**os.environ, **PEER_ENV}, capture_output=True,
                           timeout=300)


def _counter(endpoint: str) -> Any:
    """The tests' counting proxy (tests/neutron/http_counter.py) in front of the peer, if present."""
    try:
        sys.path.insert(0, str(REPO / "tests" / "neutron"))
        from http_counter import HttpCounter
        return HttpCounter(endpoint).start()
    except Exception:
        return None
    finally:
        sys.path.pop(0)


def measure(endpoint: str, tag: str, n: int, shim: str, work: Path, log: Callable[[str], None]) -> dict[str, Any]:
    api = Api(endpoint, uuid.uuid4().hex)
    out: dict[str, Any] = {}
    net = api.call("POST", "/v2.0/networks", {"network": {"name": f"cnb-{tag}", "project_id": api.project_id}})
    net_id = net["network"]["id"]
    node = f"cnb-{tag}-nnode"
    sbs = [Sandbox(f"cnb-{tag}-nsb{i}", f"cnbn{tag}c{i:04d}", f"npod{i}") for i in range(n)]
    counter = _counter(endpoint)
    agents: list[Agent] = []
    try:
        api.call("POST", "/v2.0/subnets", {"subnet": {"network_id": net_id, "ip_version": 4, "cidr": "10.79.0.0/16",
                                                      "project_id": api.project_id, "enable_dhcp": False}})
        for i in range(2):      # warm-up: the first port of a project also creates its default security group
            pid = api.call("POST", "/v2.0/ports", api.port_body(net_id, f"cnb-warm-{i}"))["port"]["id"]
            api.call("DELETE", f"/v2.0/ports/{pid}")
        netns.create_many([node, *(sb.netns for sb in sbs)])
        url = counter.url if counter is not None else endpoint
        provider = (f'\n[provider]\ntype = "neutron"\nauth_type = "noauth"\nendpoint = "{url}"\n'
                    f'project_id = "{api.project_id}"\ntimeout_s = 30\n\n'
                    f'[networks.npods]\nmode = "linuxbridge"\nneutron_network = "{net_id}"\n')
        # a parking netns of the bench's own, removed with the node (see the finally below)
        parking = f"{node}-park"[:40]
        extra_agent = f'host_netns = "/run/netns/{node}"\nparking_netns = "{parking}"'
        # cold: no pool, every ADD creates its port and every DEL deletes it; interleaved with
        # the bare POST so that the server's load (it shares 2 cores) hits both alike
        cold = Agent(_dir(work, "cold"), [], extra_agent=extra_agent, extra_toml=provider)
        agents.append(cold)
        cold.start(timeout=120)
        plugin = cloudnic("neutron-cold", shim, cold.socket, "npods")
        plugin.call("ADD", sbs[0])        # warm-up (caches: network, subnets, security groups)
        plugin.call("DEL", sbs[0])
        create: list[float] = []
        adds: list[float] = []
        calls: dict[str, int] = {}
        # the bare POST takes the agent's path to Neutron (through the counting proxy when there is one), with the
        # agent's body (ownership tags included), so that the overhead is cloudnic's own and not the proxy's hop
        bare = Api(url, api.project_id)
        for i, sb in enumerate(sbs):
            body = bare.port_body(net_id, f"cnb-bench-{i}")
            body["port"]["tags"] = ["cloudnic:cluster=bench", f"cloudnic:node={NODE_NAME}"]
            t0 = time.perf_counter()
            pid = bare.call("POST", "/v2.0/ports", body)["port"]["id"]
            create.append((time.perf_counter() - t0) * 1000.0)
            bare.call("DELETE", f"/v2.0/ports/{pid}")
            if counter is not None:
                counter.reset()
            ex = plugin.call("ADD", sb)
            if ex.ok:
                adds.append(ex.wall_ms)
            else:
                out.setdefault("neutron_errors", []).append(ex.error())
            if counter is not None:
                for path, v in counter.counts().items():
                    key = re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "{id}", path)
                    calls[key] = calls.get(key, 0) + v
            plugin.call("DEL", sb)
        out.update(Summary.of(create).flat("neutron_port_create"))
        out["neutron_port_create_ms"] = out["neutron_port_create_p50_ms"]
        cold.stop()
        # what one cold ADD asks of Neutron, and the agent's own port step (port_ms of "ADD done")
        out["neutron_cold_add_calls"] = {k: round(v / max(len(sbs), 1), 2) for k, v in sorted(calls.items())}
        port_ms = [float(r["port_ms"]) for r in _log(cold.log_path) if r.get("msg") == "ADD done" and "port_ms" in r]
        out.update(Summary.of(port_ms[1:]).flat("neutron_cold_agent_port"))
        out.update(Summary.of(adds).flat("neutron_cold_add"))
        out["neutron_cold_add_ms"] = out["neutron_cold_add_p50_ms"]
        if adds and create:
            out["neutron_cold_add_overhead_ms"] = round(out["neutron_cold_add_ms"] - out["neutron_port_create_ms"], 2)
        # warm: a pool of 50 filled at start; the refill is timed and its POSTs counted
        pool = f"\n[networks.npods.pool]\nmin_ready = {POOL}\nmax_idle = {POOL}\nbatch = {POOL}\n"
        warm = Agent(_dir(work, "warm"), [], extra_agent=extra_agent, extra_toml=provider + pool)
        agents.append(warm)
        if counter is not None:
            counter.reset()
        warm.start(timeout=120)
        t0 = time.perf_counter()
        deadline = t0 + 300
        while len(api.ports(net_id)) < POOL and time.perf_counter() < deadline:
            time.sleep(0.05)
        have = len(api.ports(net_id))
        # from the agent's spawn (the pool fills in the background once it serves); and from "ready"
        out["neutron_refill_50_s"] = round(time.perf_counter() - t0 + warm.start_s, 2) if have >= POOL else None
        out["neutron_refill_50_after_ready_s"] = round(time.perf_counter() - t0, 2) if have >= POOL else None
        out["neutron_refill_50_posts"] = counter.counts().get("POST /v2.0/ports") if counter is not None else None
        if counter is not None:
            refill: dict[str, int] = {}
            for path, v in counter.counts().items():
                key = re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "{id}", path)
                refill[key] = refill.get(key, 0) + v
            out["neutron_refill_50_calls"] = dict(sorted(refill.items()))
        log(f"neutron: pool of {POOL} ready after {out['neutron_refill_50_s']} s (from agent start)")
        plugin = cloudnic("neutron-pool", shim, warm.socket, "npods")
        hits = []
        for sb in sbs[:min(n, POOL - 5)]:
            ex = plugin.call("ADD", sb)
            if ex.ok:
                hits.append(ex.wall_ms)
        for sb in sbs[:min(n, POOL - 5)]:
            plugin.call("DEL", sb)
        out.update(Summary.of(hits).flat("neutron_pool_add"))
        warm.stop()
        # the floor of a refill: one bulk POST of 50 ports, made directly
        body = {"ports": [api.port_body(net_id, f"cnb-bulk-{i}")["port"] for i in range(POOL)]}
        t0 = time.perf_counter()
        made = api.call("POST", "/v2.0/ports", body)["ports"]
        out["neutron_bulk_post_50_s"] = round(time.perf_counter() - t0, 2)
        for p in made:
            api.call("DELETE", f"/v2.0/ports/{p['id']}")
        return out
    finally:
        for a in agents:
            a.stop()
        if counter is not None:
            counter.close()
        netns.delete_many([node, f"{node}-park"[:40], *(sb.netns for sb in sbs)])
        for p in api.ports(net_id):
            try:
                api.call("DELETE", f"/v2.0/ports/{p['id']}")
            except OSError:
                pass
        try:
            api.call("DELETE", f"/v2.0/networks/{net_id}")
        except OSError as e:
            log(f"neutron: could not delete network {net_id}: {e}")


def _log(path: Path) -> list[dict[str, Any]]:
    out = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def _dir(work: Path, name: str) -> Path:
    d = work / f"neutron-{name}"
    d.mkdir(parents=True, exist_ok=True)
    return d
