"""The IaaS provider contract.

Two cloud shapes must fit (DESIGN.md §3.5, reference/qingcloud.md):

* *port model* (Neutron): a port is a separate object with its own MAC and fixed IPs;
  the node plugs it by creating a veth/tap whose MAC is the port's MAC.
* *NIC model* (QingCloud): a port is a vNIC that the cloud hot-plugs into the node;
  after ``attach`` it shows up as a host link, found by MAC, that the dataplane moves
  into the sandbox (or routes to, when one NIC is shared by several pods).

The contract is synchronous: the agent calls it from worker threads. Every method
raises only :mod:`cloudnic.errors` classes (``TryAgainLater`` where a retry may help).
"""

from __future__ import annotations

import abc
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class Capabilities:
    """What a provider can do; the agent and the pools adapt to it."""

    name: str
    bulk_create: bool = False       # create_ports(spec, count>1) is one IaaS call
    hotplug_nic: bool = False       # ports must be attach()ed to the node (NIC model)
    security_groups: bool = False   # port security groups are enforced by the cloud
    tags: bool = False              # ports carry ownership tags
    static_ip: bool = True          # a caller may ask for a specific fixed IP
    static_mac: bool = False        # a caller may ask for a specific MAC


@dataclass(frozen=True)
class Route:
    dst: str                 # CIDR
    gw: str | None = None


@dataclass(frozen=True)
class Subnet:
    """A provider subnet as the dataplane and the CNI result need it."""

    id: str
    network_id: str
    cidr: IPNetwork
    gateway: IPAddress | None
    name: str = ""
    host_routes: tuple[Route, ...] = ()
    dns_nameservers: tuple[str, ...] = ()

    @property
    def version(self) -> int:
        return self.cidr.version


@dataclass(frozen=True)
class Network:
    id: str
    name: str
    mtu: int | None = None
    subnets: tuple[Subnet, ...] = ()
    network_type: str = ""          # flat | vlan | vxlan | standalone ...
    segmentation_id: int | None = None


@dataclass(frozen=True)
class FixedIP:
    subnet_id: str
    address: IPAddress


@dataclass(frozen=True)
class PortSpec:
    """What the agent asks a provider for. Empty fields mean "provider's choice"."""

    network_id: str
    subnet_ids: tuple[str, ...] = ()          # allocate one address from each of these
    fixed_ips: tuple[IPAddress, ...] = ()     # exactly these addresses
    mac: str | None = None
    security_groups: tuple[str, ...] = ()
    name: str = ""                            # identifies the pod, e.g. "ns/pod"
    device_owner: str = "compute:cloudnic"
    host_id: str = ""                         # node name (binding:host_id)
    tags: tuple[str, ...] = ()                # ownership tags (cluster id, node)


@dataclass(frozen=True)
class Port:
    id: str
    network_id: str
    mac: str
    fixed_ips: tuple[FixedIP, ...]
    name: str = ""
    status: str = "ACTIVE"
    security_groups: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    device_owner: str = ""
    host_id: str = ""
    host_link: str | None = None     # NIC model: the host link name once attached
    extra: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class Health:
    ok: bool
    detail: str = ""


class Provider(abc.ABC):
    """An IaaS that hands out ports. Keep it small (os-vif is the model)."""

    @abc.abstractmethod
    def describe(self) -> Capabilities: ...

    @abc.abstractmethod
    def get_network(self, name_or_id: str) -> Network:
        """The network with its subnets; ``NotFound`` names the network if absent."""

    @abc.abstractmethod
    def create_ports(self, spec: PortSpec, count: int = 1) -> list[Port]:
        """Create ``count`` ports like ``spec`` (one bulk call where the cloud can).

        All-or-nothing: on failure nothing stays allocated. ``fixed_ips`` with
        ``count > 1`` is refused with ``InvalidConfig``.
        """

    @abc.abstractmethod
    def get_port(self, port_id: str) -> Port | None:
        """The port, or None when it no longer exists."""

    @abc.abstractmethod
    def update_port(self, port_id: str, *, name: str | None = None,
                    security_groups: tuple[str, ...] | None = None,
                    tags: tuple[str, ...] | None = None) -> Port: ...

    @abc.abstractmethod
    def delete_ports(self, port_ids: list[str]) -> None:
        """Delete ports; a port that is already gone is not an error."""

    @abc.abstractmethod
    def list_owned_ports(self, cluster_id: str, node: str) -> list[Port]:
        """Every port this cluster's agent on ``node`` owns (by tags or names)."""

    def attach(self, port: Port, node: str) -> Port:
        """NIC model: hot-plug the port into the node; returns it with ``host_link``."""
        return port

    def detach(self, port: Port, node: str) -> None:
        """NIC model: unplug the port from the node; no-op for the port model."""

    def health(self) -> Health:
        return Health(ok=True)

    def close(self) -> None:
        """Release clients, connections and files."""
