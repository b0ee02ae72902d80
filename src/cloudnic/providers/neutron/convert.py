"""Neutron JSON <-> the provider contract's values, and the name-based ownership fallback.

When the server has no tag extension, ownership is carried in the port name:
``cloudnic/<cluster>/<node>/<name>``; reading such a port back gives the plain name and
the same ``cloudnic:cluster=`` / ``cloudnic:node=`` tags a tagging server would return,
so the rest of cloudnic never sees the difference.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any

from cloudnic.errors import InvalidConfig, ProviderError
from cloudnic.providers.base import FixedIP, IPAddress, Network, Port, Route, Subnet

CLUSTER_TAG = "cloudnic:cluster="
NODE_TAG = "cloudnic:node="
NAME_PREFIX = "cloudnic/"


def owner_of(tags: Iterable[str]) -> tuple[str, str] | None:
    """``(cluster, node)`` from ownership tags, or None when either is missing."""
    cluster = node = None
    for t in tags:
        if t.startswith(CLUSTER_TAG):
            cluster = t[len(CLUSTER_TAG):]
        elif t.startswith(NODE_TAG):
            node = t[len(NODE_TAG):]
    return (cluster, node) if cluster and node else None


def name_prefix(cluster: str, node: str) -> str:
    for what, value in (("cluster id", cluster), ("node name", node)):
        if not value or "/" in value:
            raise InvalidConfig(f"{what} {value!r} cannot be used in a Neutron port name (ownership by name, the "
                                "server has no tag extension): it must be non-empty and contain no '/'")
    return f"{NAME_PREFIX}{cluster}/{node}/"


def encode_name(name: str, tags: Iterable[str]) -> str:
    owner = owner_of(tags)
    return name if owner is None else name_prefix(*owner) + name


def decode_name(raw: str) -> tuple[str, tuple[str, ...]]:
    """``(plain name, ownership tags)`` of a port name written by :func:`encode_name`."""
    if raw.startswith(NAME_PREFIX):
        parts = raw[len(NAME_PREFIX):].split("/", 2)
        if len(parts) == 3 and parts[0] and parts[1]:
            return parts[2], (CLUSTER_TAG + parts[0], NODE_TAG + parts[1])
    return raw, ()


def owner_description(tags: Iterable[str]) -> str:
    """The port description that marks ownership until the tags are set (see provider.py)."""
    owner = owner_of(tags)
    return "" if owner is None else f"{CLUSTER_TAG}{owner[0]} {NODE_TAG}{owner[1]}"


class _Fields:
    """Typed reads of one Neutron JSON object; a bad field becomes a ProviderError naming it."""

    def __init__(self, kind: str, d: Any, ident: str = "") -> None:
        if not isinstance(d, Mapping):
            raise ProviderError(f"Neutron returned a {kind} that is not a JSON object: got {_show(d)}; "
                                "is the endpoint a Neutron API?")
        self.kind, self.d = kind, d
        self.ident = ident or (d.get("id") if isinstance(d.get("id"), str) else "")

    def bad(self, key: str, expect: str, value: Any) -> ProviderError:
        return ProviderError(f'Neutron returned a {self.kind} cloudnic cannot read: field "{key}" must be '
                             f"{expect}, got {_show(value)}", f"{self.kind} {self.ident}".strip())

    def required_str(self, key: str) -> str:
        value = self.d.get(key)
        if not isinstance(value, str) or not value:
            raise self.bad(key, "a non-empty string" if key in self.d else "present (a non-empty string)", value)
        return value

    def text(self, key: str) -> str:
        value = self.d.get(key)
        if value is None:
            return ""
        if not isinstance(value, str):
            raise self.bad(key, "a string", value)
        return value

    def array(self, key: str) -> list[Any]:
        value = self.d.get(key)
        if value is None:
            return []
        if not isinstance(value, list | tuple):
            raise self.bad(key, "an array", value)
        return list(value)

    def texts(self, key: str) -> tuple[str, ...]:
        items = self.array(key)
        for i, item in enumerate(items):
            if not isinstance(item, str):
                raise self.bad(f"{key}[{i}]", "a string", item)
        return tuple(items)

    def objects(self, key: str) -> list[tuple[str, Mapping[str, Any]]]:
        out: list[tuple[str, Mapping[str, Any]]] = []
        for i, item in enumerate(self.array(key)):
            if not isinstance(item, Mapping):
                raise self.bad(f"{key}[{i}]", "an object", item)
            out.append((f"{key}[{i}]", item))
        return out

    def natural(self, key: str) -> int | None:
        value = self.d.get(key)
        if value is None:
            return None
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise self.bad(key, "a non-negative integer or null", value)
        return value

    def ip(self, key: str, value: Any) -> IPAddress:
        try:
            if not isinstance(value, str):
                raise ValueError(value)
            return ipaddress.ip_address(value)
        except ValueError:
            raise self.bad(key, "an IP address string", value) from None


def _show(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def port_from_json(d: Mapping[str, Any], *, names_ownership: bool = False) -> Port:
    f = _Fields("port", d)
    fixed = []
    for path, item in f.objects("fixed_ips"):
        subnet_id = item.get("subnet_id")
        if not isinstance(subnet_id, str) or not subnet_id:
            raise f.bad(f"{path}.subnet_id", "a non-empty string", subnet_id)
        fixed.append(FixedIP(subnet_id=subnet_id, address=f.ip(f"{path}.ip_address", item.get("ip_address"))))
    name = f.text("name")
    tags, description = f.texts("tags"), f.text("description")
    if names_ownership:
        name, owner_tags = decode_name(name)
        tags = tuple(dict.fromkeys((*owner_tags, *tags)))
    elif owner_of(tags) is None:
        # created, but the tags never got set (a crash or timeout between POST and PUT .../tags)
        marked = tuple(description.split())
        if owner_of(marked) is not None:
            tags = tuple(dict.fromkeys((*tags, *(t for t in marked if t.startswith((CLUSTER_TAG, NODE_TAG))))))
    extra = {k: d[k] for k in ("binding:vif_type", "binding:vif_details", "binding:vnic_type", "device_id",
                               "project_id", "revision_number", "admin_state_up", "port_security_enabled")
             if k in d}
    return Port(
        id=f.required_str("id"), network_id=f.required_str("network_id"), mac=f.text("mac_address").lower(),
        fixed_ips=tuple(fixed), name=name, status=f.text("status"), security_groups=f.texts("security_groups"),
        tags=tags, device_owner=f.text("device_owner"), host_id=f.text("binding:host_id"), extra=extra,
    )


def subnet_from_json(d: Mapping[str, Any]) -> Subnet:
    f = _Fields("subnet", d)
    cidr = d.get("cidr")
    try:
        if not isinstance(cidr, str):
            raise ValueError(cidr)
        network = ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        raise f.bad("cidr", "a CIDR string such as 10.0.0.0/24", cidr) from None
    gw = d.get("gateway_ip")
    routes = []
    for path, r in f.objects("host_routes"):
        dst, nexthop = r.get("destination"), r.get("nexthop")
        if not isinstance(dst, str) or not dst:
            raise f.bad(f"{path}.destination", "a CIDR string", dst)
        if nexthop is not None and not isinstance(nexthop, str):
            raise f.bad(f"{path}.nexthop", "an IP address string or null", nexthop)
        routes.append(Route(dst=dst, gw=nexthop or None))
    return Subnet(
        id=f.required_str("id"), network_id=f.required_str("network_id"), cidr=network,
        gateway=f.ip("gateway_ip", gw) if gw else None, name=f.text("name"), host_routes=tuple(routes),
        dns_nameservers=f.texts("dns_nameservers"),
    )


def network_from_json(d: Mapping[str, Any], subnets: Iterable[Mapping[str, Any]]) -> Network:
    f = _Fields("network", d)
    if not isinstance(subnets, list | tuple):
        raise ProviderError(f"Neutron returned the subnets of network {f.ident!r} as {_show(subnets)}, not as an "
                            'array: field "subnets" must be an array of subnet objects')
    order = {sid: i for i, sid in enumerate(f.texts("subnets"))}
    subs = sorted((subnet_from_json(s) for s in subnets), key=lambda s: (order.get(s.id, len(order)), s.id))
    return Network(
        id=f.required_str("id"), name=f.text("name"), mtu=f.natural("mtu") or None, subnets=tuple(subs),
        network_type=f.text("provider:network_type"), segmentation_id=f.natural("provider:segmentation_id"),
    )
