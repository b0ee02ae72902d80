"""The real Neutron peers of the neutron tests, as objects the fixtures hand to tests.

``NeutronPeer.plain()`` is neutron-server on the host's loopback (``scripts/neutron-peer.sh up``); ``NeutronPeer.lab()``
is the agent lab (``lab-up``): RabbitMQ, neutron-server and a real neutron-linuxbridge-agent inside netns ``cnn-lab``.
Both run at the same time if asked to (the lab listens only on its netns's loopback).

Addresses:
  * ``endpoint``: the server, as seen from the netns the code under test runs in (the host for the plain peer,
    ``cnn-lab`` for the lab: run the cloudnic agent there, ``peer.exec_prefix`` + argv);
  * ``host_endpoint``: the server as seen from this (pytest's) process; ``conn()`` uses it;
  * ``counting_endpoint``: an ``HttpCounter`` in front of the server, in the same netns as ``endpoint``.

``Project`` makes project-scoped networks, subnets and security groups for one test and removes everything in the
project (ports included, whoever created them) afterwards. ``lab_pod()`` plugs a Neutron port into a new pod netns
exactly as the recipe says a CNI must for the linuxbridge agent.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import json
import os
import secrets
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openstack.connection
from http_counter import HttpCounter

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "neutron-peer.sh"
DEFAULT_DIR = Path(os.environ.get("NEUTRON_CI_DIR", "/var/tmp/cloudnic-neutron"))
DEFAULT_PORT = int(os.environ.get("NEUTRON_PORT", "19696"))
PG_PORT = int(os.environ.get("NEUTRON_PG_PORT", "15432"))
LAB_NETNS = os.environ.get("NEUTRON_LAB_NETNS", "cnn-lab")
LAB_AGENT_HOST = os.environ.get("NEUTRON_AGENT_HOST", "cnn-lab-host")
LAB_PHYSNET = "physnet1"  # the only physnet the lab agent maps (to cnn-phys0 inside the netns)
PREFIX = "cnn-"  # every netns, link and Neutron name the neutron tests create starts with it


def unique(stem: str) -> str:
    return f"{PREFIX}{stem}-{secrets.token_hex(3)}"


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.2) -> Any:
    """Poll ``predicate`` until it returns something true or ``timeout`` seconds pass; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def is_refill(request: str) -> bool:
    """A request the pool's background refill makes (never the ADD path): the availability
    check before a bulk, the bulk POST itself, and tag PUTs where the server drops tags."""
    return (request == "POST /v2.0/ports" or request.endswith("/tags")
            or request.startswith("GET /v2.0/network-ip-availabilities/"))


def sh(
    argv: Sequence[str], *, check: bool = True, timeout: float = 60, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a command; with ``check`` a failure raises an AssertionError that shows its output."""
    proc = subprocess.run(
        list(argv),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=dict(env) if env is not None else None,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}")
    return proc


@dataclass
class NeutronPeer:
    """A running neutron-server (and, for the lab, its broker and linuxbridge agent) made by neutron-peer.sh."""

    kind: str  # "plain" | "lab"
    endpoint: str
    directory: Path
    netns: str | None = None
    agent_host: str | None = None
    port: int = DEFAULT_PORT
    timings: dict[str, float] = field(default_factory=dict)
    counting_endpoint: HttpCounter = field(init=False)
    _forwarder: HttpCounter | None = field(default=None, init=False, repr=False)

    # ---- construction and life cycle ------------------------------------------------------------------------------
    @classmethod
    def plain(cls, directory: Path = DEFAULT_DIR, port: int = DEFAULT_PORT) -> NeutronPeer:
        return cls("plain", f"http://127.0.0.1:{port}", directory, port=port)

    @classmethod
    def lab(cls, directory: Path = DEFAULT_DIR, port: int = DEFAULT_PORT) -> NeutronPeer:
        return cls("lab", f"http://127.0.0.1:{port}", directory, netns=LAB_NETNS, agent_host=LAB_AGENT_HOST, port=port)

    def __post_init__(self) -> None:
        self.counting_endpoint = HttpCounter(self.endpoint, listen_netns=self.netns, upstream_netns=self.netns)

    @property
    def state_dir(self) -> Path:
        return self.directory / ("lab" if self.kind == "lab" else "api")

    @property
    def log_path(self) -> Path:
        """neutron-server's log (the failure report hook attaches its tail)."""
        return self.state_dir / "log" / "neutron-server.log"

    @property
    def agent_log_path(self) -> Path | None:
        return self.state_dir / "log" / "linuxbridge-agent.log" if self.kind == "lab" else None

    @property
    def exec_prefix(self) -> list[str]:
        """argv prefix that runs a command where ``endpoint`` and ``counting_endpoint`` are reachable."""
        return ["ip", "netns", "exec", self.netns] if self.netns else []

    @property
    def host_endpoint(self) -> str:
        """The server as this process reaches it (for the lab: a forwarder on the host's loopback into the netns)."""
        if self.netns is None:
            return self.endpoint
        if self._forwarder is None:
            self._forwarder = HttpCounter(self.endpoint, upstream_netns=self.netns).start()
        return self._forwarder.url

    def script(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, NEUTRON_CI_DIR=str(self.directory), NEUTRON_PORT=str(self.port))
        if self.netns:
            env.update(NEUTRON_LAB_NETNS=self.netns, NEUTRON_AGENT_HOST=self.agent_host or LAB_AGENT_HOST)
        proc = sh(["bash", str(SCRIPT), *args], check=False, timeout=timeout, env=env)
        if proc.returncode != 0:
            raise RuntimeError(f"scripts/neutron-peer.sh {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
        return proc

    def up(self) -> NeutronPeer:
        """Start the peer with a fresh database (stops an earlier one of the same kind first)."""
        started = time.monotonic()
        self.script("lab-up" if self.kind == "lab" else "up")
        self.timings = self._read_timings()
        self.timings["fixture"] = round(time.monotonic() - started, 1)
        self.counting_endpoint.start()
        return self

    def down(self) -> None:
        """Stop everything the peer started and remove its directory."""
        self.counting_endpoint.close()
        if self._forwarder is not None:
            self._forwarder.close()
            self._forwarder = None
        self.script("lab-down" if self.kind == "lab" else "down", timeout=180)

    def stop(self) -> None:
        """Stop only neutron-server (outage tests); the database stays. start() brings it back."""
        self.script("lab-server-stop" if self.kind == "lab" else "server-stop", timeout=60)

    def start(self) -> None:
        self.script("lab-server-start" if self.kind == "lab" else "server-start", timeout=180)

    def running(self) -> bool:
        try:
            return self.get("/v2.0/networks?limit=1", timeout=5) is not None
        except OSError:
            return False

    def _read_timings(self) -> dict[str, float]:
        out: dict[str, float] = {}
        path = self.state_dir / "timings"
        for line in path.read_text().splitlines() if path.exists() else []:
            key, _, value = line.partition("=")
            out[key] = float(value.rstrip("s"))
        return out

    # ---- talking to it -------------------------------------------------------------------------------------------
    def conn(self, timeout: float = 60) -> openstack.connection.Connection:
        """An openstacksdk Connection (auth_type none, admin in noauth) for test set-up and assertions."""
        return openstack.connection.Connection(
            auth_type="none", network_endpoint_override=self.host_endpoint, api_timeout=timeout
        )

    def get(self, path: str, timeout: float = 30) -> Any:
        """GET ``path`` (e.g. "/v2.0/extensions") with the standard library; the decoded JSON."""
        import urllib.request

        with urllib.request.urlopen(self.host_endpoint + path, timeout=timeout) as resp:
            return json.load(resp)

    def extensions(self) -> set[str]:
        return {ext["alias"] for ext in self.get("/v2.0/extensions")["extensions"]}

    def fake_agent(self, host: str) -> None:
        """Make ports with binding:host_id=host bind (vif_type bridge) though no agent runs (plain peer only)."""
        if self.kind != "plain":
            raise ValueError("fake_agent() is for the plain peer; the lab has a real agent (agent_host)")
        self.script("fake-agent", host, timeout=60)

    def agent_alive(self) -> bool:
        if not self.agent_host:
            return False
        agents = self.get(f"/v2.0/agents?host={self.agent_host}&binary=neutron-linuxbridge-agent")["agents"]
        return any(agent["alive"] for agent in agents)

    def wait_port_status(self, port_id: str, status: str = "ACTIVE", timeout: float = 60) -> float:
        """Seconds until the port reached ``status``; AssertionError naming its last status after ``timeout``."""
        net = self.conn().network
        started = time.monotonic()
        while (last := net.get_port(port_id).status) != status:
            if time.monotonic() - started > timeout:
                raise AssertionError(f"port {port_id} is still {last} after {timeout}s, not {status}")
            time.sleep(0.25)
        return time.monotonic() - started

    @contextlib.contextmanager
    def project(self, stem: str = "test") -> Iterator[Project]:
        """A fresh project for one test; everything in it (and every port on its networks) is deleted at exit."""
        project = Project(self, uuid.uuid4().hex, stem)
        try:
            yield project
        finally:
            project.cleanup()


@dataclass(frozen=True)
class ScratchNet:
    """A project-scoped network with one subnet and one security group, made for a test."""

    project_id: str
    network_id: str
    network_name: str
    network_type: str
    physnet: str | None
    mtu: int
    subnet_id: str
    subnet_name: str
    cidr: str
    gateway_ip: str | None
    security_group_id: str
    security_group_name: str

    @property
    def bridge(self) -> str:
        """The linuxbridge agent's bridge for this network."""
        return f"brq{self.network_id[:11]}"


class Project:
    """Creates resources in one project (noauth: "project_id" in the body) and deletes them all at cleanup()."""

    def __init__(self, peer: NeutronPeer, project_id: str, stem: str = "test") -> None:
        self.peer = peer
        self.id = project_id
        self.stem = stem
        self.net = peer.conn().network
        self._quota_set = False

    def name(self, what: str) -> str:
        return unique(f"{self.stem}-{what}")

    def security_group(self, name: str | None = None, rules: Sequence[Mapping[str, Any]] = ()) -> Any:
        """A security group (Neutron adds its egress rules) with these ingress ``rules`` (keyword dicts for
        create_security_group_rule, e.g. {"protocol": "tcp", "port_range_min": 80, "port_range_max": 80})."""
        sg = self.net.create_security_group(name=name or self.name("sg"), project_id=self.id)
        for rule in rules:
            self.add_rule(sg.id, **rule)
        return sg

    def add_rule(self, security_group_id: str, **rule: Any) -> Any:
        rule.setdefault("direction", "ingress")
        rule.setdefault("ethertype", "IPv4")
        return self.net.create_security_group_rule(security_group_id=security_group_id, project_id=self.id, **rule)

    def network(
        self,
        *,
        cidr: str = "10.77.0.0/24",
        network_type: str = "vxlan",
        physnet: str | None = None,
        segment: int | None = None,
        gateway_ip: str | None = "",
        allocation_pools: Sequence[Mapping[str, str]] | None = None,
        dns_nameservers: Sequence[str] = (),
        host_routes: Sequence[Mapping[str, str]] = (),
        mtu: int | None = None,
        sg_rules: Sequence[Mapping[str, Any]] | None = None,
        name: str | None = None,
    ) -> ScratchNet:
        """A network (vxlan, flat or vlan) with one subnet and a security group.

        ``gateway_ip`` "" means the subnet's first address, None no gateway. A flat network on the plain peer gets
        a physnet of its own (flat_networks = *), so tests never collide on one; on the lab it is physnet1, the
        only one the agent maps (one flat network at a time there). ``sg_rules`` default: all IPv4 ingress.
        """
        net_name = name or self.name("net")
        attrs: dict[str, Any] = {"name": net_name, "project_id": self.id, "provider_network_type": network_type}
        if network_type in ("flat", "vlan"):
            physnet = physnet or (LAB_PHYSNET if self.peer.kind == "lab" or network_type == "vlan" else unique("phys"))
            attrs["provider_physical_network"] = physnet
        if segment is not None:
            attrs["provider_segmentation_id"] = segment
        if mtu is not None:
            attrs["mtu"] = mtu
        network = self.net.create_network(**attrs)
        subnet_attrs: dict[str, Any] = {
            "network_id": network.id,
            "name": f"{net_name}-subnet",
            "project_id": self.id,
            "cidr": cidr,
            "ip_version": ipaddress.ip_network(cidr).version,
            "enable_dhcp": False,
        }
        if gateway_ip is None:
            subnet_attrs["gateway_ip"] = None
        elif gateway_ip:
            subnet_attrs["gateway_ip"] = gateway_ip
        if allocation_pools is not None:
            subnet_attrs["allocation_pools"] = [dict(pool) for pool in allocation_pools]
        if dns_nameservers:
            subnet_attrs["dns_nameservers"] = list(dns_nameservers)
        if host_routes:
            subnet_attrs["host_routes"] = [dict(route) for route in host_routes]
        subnet = self.net.create_subnet(**subnet_attrs)
        rules = [{"protocol": None}] if sg_rules is None else sg_rules
        sg = self.security_group(f"{net_name}-sg", rules)
        return ScratchNet(
            project_id=self.id,
            network_id=network.id,
            network_name=net_name,
            network_type=network_type,
            physnet=physnet,
            mtu=network.mtu,
            subnet_id=subnet.id,
            subnet_name=subnet.name,
            cidr=cidr,
            gateway_ip=subnet.gateway_ip,
            security_group_id=sg.id,
            security_group_name=sg.name,
        )

    def set_quota(self, **limits: int) -> dict[str, int]:
        """Set this project's quotas (Neutron names: port=2, network=..., security_group=...); reset at cleanup."""
        self._quota_set = True
        resp = self.net.put(f"/quotas/{self.id}", json={"quota": limits})
        if resp.status_code != 200:
            raise AssertionError(f"PUT /v2.0/quotas/{self.id} {limits}: {resp.status_code} {resp.text}")
        quota: dict[str, int] = resp.json()["quota"]
        return quota

    def ports(self) -> list[Any]:
        """Every port in this project or on one of its networks."""
        found = {port.id: port for port in self.net.ports(project_id=self.id)}
        for network in self.net.networks(project_id=self.id):
            found.update({port.id: port for port in self.net.ports(network_id=network.id)})
        return list(found.values())

    def cleanup(self) -> None:
        """Delete ports, networks (with their subnets), security groups and the quota override of the project."""
        problems: list[str] = []

        def attempt(what: str, call: Callable[[], Any]) -> None:
            try:
                call()
            except Exception as exc:
                problems.append(f"{what}: {exc}")

        if not self.peer.running():  # the test stopped it (outage test): the clean-up needs it
            self.peer.start()
        for port in self.ports():
            attempt(f"port {port.id}", functools.partial(self.net.delete_port, port, ignore_missing=True))
        for network in list(self.net.networks(project_id=self.id)):
            attempt(f"network {network.id}", functools.partial(self.net.delete_network, network, ignore_missing=True))
        for sg in list(self.net.security_groups(project_id=self.id)):
            attempt(f"security group {sg.id}", functools.partial(self.net.delete_security_group, sg))
        if self._quota_set:
            attempt("quota", lambda: self.net.delete(f"/quotas/{self.id}"))
        if problems:
            raise AssertionError(f"cleanup of project {self.id} failed: " + "; ".join(problems))


# ---- the lab: plugging a port the way a CNI must for the linuxbridge agent ------------------------------------------


@dataclass(frozen=True)
class LabPod:
    netns: str
    tap: str
    bridge: str
    port_id: str
    mac: str
    ip: str
    prefixlen: int


def lab_plug(peer: NeutronPeer, port: Any, network: Any, pod_netns: str) -> LabPod:
    """What a CNI does for a linuxbridge-bound port: a veth ``tap<port[:11]>`` in the lab netns whose peer is the
    pod's eth0 (the port's MAC, IP and the network's MTU), enslaved to ``brq<network[:11]>`` (made if the agent has
    not made it yet: for device_owner compute:* the agent never enslaves the tap itself)."""
    assert peer.netns, "lab_plug() needs the lab peer"
    lab = peer.netns
    tap, bridge = f"tap{port.id[:11]}", f"brq{network.id[:11]}"
    fixed = port.fixed_ips[0]
    subnet = peer.conn().network.get_subnet(fixed["subnet_id"])
    prefixlen = ipaddress.ip_network(subnet.cidr).prefixlen
    mtu = str(network.mtu)
    sh(
        [
            "ip",
            "-n",
            lab,
            "link",
            "add",
            tap,
            "mtu",
            mtu,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "mtu",
            mtu,
            "netns",
            pod_netns,
        ]
    )
    sh(["ip", "-n", pod_netns, "link", "set", "eth0", "address", port.mac_address])
    sh(["ip", "-n", pod_netns, "addr", "add", f"{fixed['ip_address']}/{prefixlen}", "dev", "eth0"])
    sh(["ip", "-n", pod_netns, "link", "set", "lo", "up"])
    sh(["ip", "-n", pod_netns, "link", "set", "eth0", "up"])
    if sh(["ip", "-n", lab, "link", "show", bridge], check=False).returncode != 0:
        made = sh(["ip", "-n", lab, "link", "add", bridge, "type", "bridge"], check=False)
        if made.returncode != 0 and "File exists" not in made.stderr:  # the agent may make it at the same moment
            raise AssertionError(f"cannot create bridge {bridge} in {lab}: {made.stderr}")
    sh(["ip", "-n", lab, "link", "set", bridge, "up"])
    sh(["ip", "-n", lab, "link", "set", tap, "master", bridge])
    sh(["ip", "-n", lab, "link", "set", tap, "up"])
    return LabPod(pod_netns, tap, bridge, port.id, port.mac_address, fixed["ip_address"], prefixlen)


@contextlib.contextmanager
def lab_pod(peer: NeutronPeer, port: Any, network: Any) -> Iterator[LabPod]:
    """A pod netns ``cnn-pod-*`` plugged to ``port`` with lab_plug(); the netns and the tap are removed at exit."""
    assert peer.netns, "lab_pod() needs the lab peer"
    pod_netns = unique("pod")
    sh(["ip", "netns", "add", pod_netns])
    try:
        yield lab_plug(peer, port, network, pod_netns)
    finally:
        sh(["ip", "-n", peer.netns, "link", "del", f"tap{port.id[:11]}"], check=False)
        sh(["ip", "netns", "del", pod_netns], check=False)


def ping(pod: LabPod, address: str, count: int = 1, wait_s: int = 1) -> bool:
    return (
        sh(
            ["ip", "netns", "exec", pod.netns, "ping", "-n", "-q", "-c", str(count), "-W", str(wait_s), address],
            check=False,
            timeout=count * wait_s + 10,
        ).returncode
        == 0
    )
