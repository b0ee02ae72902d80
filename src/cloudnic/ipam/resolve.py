"""Address decisions: which network, subnet, addresses, MAC and security groups a request gets.

Order of precedence (DESIGN.md §3.1): what the request itself asks for (runtimeConfig
capabilities and pod annotations, then ``args.cni``, then ``CNI_ARGS``), then the
namespace → network/subnet mapping of the agent config, then the network's defaults
named by the CNI config. A subnet wins over a network, as in skynet: asking for a subnet
of another network moves the request to that network.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from cloudnic.errors import AddressUnavailable, InvalidConfig, NotFound
from cloudnic.providers.base import IPAddress, Network, PortSpec, Subnet


@dataclass(frozen=True)
class Request:
    """The request's wishes, each with where it came from (for messages)."""

    network: str | None = None
    network_source: str = ""
    subnet: str | None = None
    subnet_source: str = ""
    ips: tuple[IPAddress, ...] = ()
    ips_source: str = ""
    mac: str | None = None
    security_groups: tuple[str, ...] = ()
    pod_namespace: str = ""
    pod_name: str = ""
    container_id: str = ""


@dataclass(frozen=True)
class Defaults:
    """What applies when the request does not say: namespace mapping, then the CNI config."""

    network: str
    subnet: str | None = None
    security_groups: tuple[str, ...] = ()
    namespace_network: str | None = None
    namespace_subnet: str | None = None
    namespace_security_groups: tuple[str, ...] = ()


class Catalog(Protocol):
    """The networks a provider serves (standalone: the config; Neutron: a cached lookup)."""

    def get(self, name_or_id: str) -> Network: ...   # raises NotFound

    def all(self) -> list[Network]: ...


def find_subnet(network: Network, ref: str) -> Subnet | None:
    """A subnet of ``network`` by id, name or CIDR."""
    for s in network.subnets:
        if ref in (s.id, s.name, str(s.cidr)):
            return s
    return None


def choose_network(req: Request, d: Defaults, catalog: Catalog) -> tuple[Network, Subnet | None]:
    """Pick the network and (optional) subnet."""
    if req.network:
        name, source = req.network, req.network_source or "request"
    elif d.namespace_network:
        name, source = d.namespace_network, f'namespace mapping of "{req.pod_namespace}"'
    else:
        name, source = d.network, 'CNI config "network"'
    try:
        network = catalog.get(name)
    except NotFound as e:
        raise NotFound(f"network {name!r} ({source}) does not exist; declare it in the agent config "
                       f"or fix {source}", e.details) from e
    subnet_ref, subnet_source = None, ""
    if req.subnet:
        subnet_ref, subnet_source = req.subnet, req.subnet_source or "request"
    elif d.namespace_subnet:
        subnet_ref, subnet_source = d.namespace_subnet, f'namespace mapping of "{req.pod_namespace}"'
    elif d.subnet:
        subnet_ref, subnet_source = d.subnet, 'CNI config "subnet"'
    if subnet_ref is None:
        return network, None
    subnet = find_subnet(network, subnet_ref)
    if subnet is None and req.subnet and not req.network:
        # the subnet wins over the network: look for it in the other networks
        for other in catalog.all():
            subnet = find_subnet(other, subnet_ref)
            if subnet is not None:
                return other, subnet
    if subnet is None:
        raise NotFound(f"subnet {subnet_ref!r} ({subnet_source}) is not a subnet of network {network.name!r}; "
                       f"its subnets are: {', '.join(str(s.cidr) for s in network.subnets) or 'none'}")
    return network, subnet


def build_port_spec(req: Request, d: Defaults, network: Network, subnet: Subnet | None, *,
                    node: str, cluster_id: str) -> PortSpec:
    """Validate the requested addresses against the chosen network/subnet and make the PortSpec."""
    subnet_ids: tuple[str, ...] = (subnet.id,) if subnet else ()
    for ip in req.ips:
        holders = [s for s in network.subnets if ip in s.cidr]
        if subnet is not None and ip not in subnet.cidr and ip.version == subnet.version:
            raise AddressUnavailable(
                f"{ip} ({req.ips_source}) is outside subnet {subnet.cidr} of network {network.name!r}")
        if not holders:
            raise AddressUnavailable(
                f"{ip} ({req.ips_source}) is in no subnet of network {network.name!r} "
                f"({', '.join(str(s.cidr) for s in network.subnets)})")
    if req.ips:
        subnet_ids = ()    # fixed IPs name their subnets themselves
    sgs = req.security_groups or d.namespace_security_groups or d.security_groups
    if req.pod_name:
        name = f"cloudnic/{req.pod_namespace or 'default'}/{req.pod_name}"
    else:
        name = f"cloudnic/{req.container_id[:12]}"
    if not network.subnets:
        raise InvalidConfig(f"network {network.name!r} has no subnet to allocate from")
    return PortSpec(
        network_id=network.id, subnet_ids=subnet_ids, fixed_ips=tuple(req.ips), mac=req.mac,
        security_groups=tuple(sgs), name=name, host_id=node,
        tags=(f"cloudnic:cluster={cluster_id}", f"cloudnic:node={node}"),
    )
