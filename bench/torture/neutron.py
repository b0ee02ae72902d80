"""The Neutron side of the torture: a real neutron-server peer (our own unless
``NEUTRON_ENDPOINT`` is set), a scratch network in a fresh project, the linuxbridge
network of the node, and the ports neutron-server itself lists (for the invariants)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
import urllib.error
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from bench.neutron import Api
from bench.torture.invariants import CloudPort
from bench.torture.node import REPO, Net

SCRIPT = REPO / "scripts" / "neutron-peer.sh"
PEER_ENV = {"NEUTRON_CI_DIR": "/var/tmp/cnt-neutron", "NEUTRON_PORT": "19996", "NEUTRON_PG_PORT": "15732"}
NETWORK = "npods"


def peer_env() -> dict[str, str]:
    """Our own defaults unless the caller exported NEUTRON_* (tests: their isolated peer)."""
    return {**os.environ, **{k: os.environ.get(k, v) for k, v in PEER_ENV.items()}}


@contextlib.contextmanager
def peer(log: Callable[[str], None]) -> Iterator[str]:
    """The endpoint of a running neutron-server: ``NEUTRON_ENDPOINT``, else ours (taken down at the end)."""
    endpoint = os.environ.get("NEUTRON_ENDPOINT", "")
    if endpoint:
        yield endpoint
        return
    env = peer_env()
    t0 = time.monotonic()
    p = subprocess.run([str(SCRIPT), "up"], env=env, capture_output=True, text=True, timeout=1200)
    try:
        if p.returncode != 0:
            raise RuntimeError(f"neutron-peer.sh up failed: {p.stderr.strip()[-600:]}")
        endpoint = p.stdout.strip().splitlines()[-1]
        log(f"neutron peer up at {endpoint} in {time.monotonic() - t0:.1f} s ({env['NEUTRON_CI_DIR']})")
        yield endpoint
    finally:
        subprocess.run([str(SCRIPT), "down"], env=env, capture_output=True, timeout=300)


def fake_agent(host: str) -> None:
    subprocess.run([str(SCRIPT), "fake-agent", host], env=peer_env(), capture_output=True, timeout=120, check=True)


@dataclass(frozen=True)
class Scratch:
    api: Api
    network_id: str


@contextlib.contextmanager
def scratch_network(endpoint: str, cidr: str = "10.78.0.0/24") -> Iterator[Scratch]:
    """A network + subnet in a fresh project; every port of the project and the network go at the end."""
    api = Api(endpoint, uuid.uuid4().hex)
    net = api.call("POST", "/v2.0/networks", {"network": {"name": "cnt-torture", "project_id": api.project_id}})
    net_id = net["network"]["id"]
    try:
        api.call("POST", "/v2.0/subnets", {"subnet": {"network_id": net_id, "ip_version": 4, "cidr": cidr,
                                                      "project_id": api.project_id, "enable_dhcp": False}})
        yield Scratch(api, net_id)
    finally:
        for p in api.ports(net_id):
            with contextlib.suppress(OSError, urllib.error.HTTPError):
                api.call("DELETE", f"/v2.0/ports/{p['id']}")
        with contextlib.suppress(OSError, urllib.error.HTTPError):
            api.call("DELETE", f"/v2.0/networks/{net_id}")


def cloud_ports(api: Api, network_id: str) -> Callable[[], list[CloudPort]]:
    """Every port of the (fresh, node-private) project on the network, as neutron-server lists it."""
    def listed() -> list[CloudPort]:
        ports = api.call("GET", f"/v2.0/ports?network_id={network_id}&project_id={api.project_id}")["ports"]
        return [CloudPort(p["id"], tuple(ip["ip_address"] for ip in p.get("fixed_ips", [])),
                          f"{p.get('name', '')!r} tags={sorted(p.get('tags', []))}") for p in ports]
    return listed


def provider_toml(endpoint: str, project_id: str) -> str:
    # a POST here takes ~0.4 s: a short client timeout keeps the post-recovery recheck (recover.in_flight_until) close
    return (f'[provider]\ntype = "neutron"\nauth_type = "noauth"\nendpoint = "{endpoint}"\n'
            f'project_id = "{project_id}"\nport_ready = "plugged"\ntimeout_s = 8\n')


def nets(network_id: str, pool: int = 0) -> list[Net]:
    toml = f'[networks.{NETWORK}]\nmode = "linuxbridge"\nneutron_network = "{network_id}"\n'
    if pool:
        toml += f"[networks.{NETWORK}.pool]\nmin_ready = {pool}\nmax_idle = {pool}\nbatch = {pool}\n"
    return [Net(NETWORK, "linuxbridge", toml, bridge=f"brq{network_id[:11]}")]
