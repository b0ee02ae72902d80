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
from cloudnic.providers.base import FixedIP, Network, Port, Route, Subnet

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


def port_from_json(d: Mapping[str, Any], *, names_ownership: bool = False) -> Port:
    try:
        fixed = tuple(FixedIP(subnet_id=str(f["subnet_id"]), address=ipaddress.ip_address(f["ip_address"]))
                      for f in d.get("fixed_ips") or ())
        name = str(d.get("name") or "")
        tags = tuple(str(t) for t in d.get("tags") or ())
        if names_ownership:
            name, owner_tags = decode_name(name)
            tags = tuple(dict.fromkeys((*owner_tags, *tags)))
        elif owner_of(tags) is None:
            # created, but the tags never got set (a crash or timeout between POST and PUT .../tags)
            marked = tuple(str(d.get("description") or "").split())
            if owner_of(marked) is not None:
                tags = tuple(dict.fromkeys((*tags, *(t for t in marked if t.startswith((CLUSTER_TAG, NODE_TAG))))))
        extra = {k: d[k] for k in ("binding:vif_type", "binding:vif_details", "binding:vnic_type", "device_id",
                                   "project_id", "revision_number", "admin_state_up", "port_security_enabled")
                 if k in d}
        return Port(
            id=str(d["id"]), network_id=str(d["network_id"]), mac=str(d.get("mac_address") or "").lower(),
            fixed_ips=fixed, name=name, status=str(d.get("status") or ""),
            security_groups=tuple(str(s) for s in d.get("security_groups") or ()), tags=tags,
            device_owner=str(d.get("device_owner") or ""), host_id=str(d.get("binding:host_id") or ""),
            extra=extra,
        )
    except (KeyError, TypeError, ValueError) as e:
        raise ProviderError(f"Neutron returned a port cloudnic cannot read ({e!r})",
                            str(dict(d).get("id", "")) if isinstance(d, Mapping) else "") from None


def subnet_from_json(d: Mapping[str, Any]) -> Subnet:
    try:
        gw = d.get("gateway_ip")
        return Subnet(
            id=str(d["id"]), network_id=str(d["network_id"]), cidr=ipaddress.ip_network(d["cidr"], strict=False),
            gateway=ipaddress.ip_address(gw) if gw else None, name=str(d.get("name") or ""),
            host_routes=tuple(Route(dst=str(r["destination"]), gw=r.get("nexthop") or None)
                              for r in d.get("host_routes") or ()),
            dns_nameservers=tuple(str(x) for x in d.get("dns_nameservers") or ()),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise ProviderError(f"Neutron returned a subnet cloudnic cannot read ({e!r})") from None


def network_from_json(d: Mapping[str, Any], subnets: Iterable[Mapping[str, Any]]) -> Network:
    seg = d.get("provider:segmentation_id")
    order = {sid: i for i, sid in enumerate(d.get("subnets") or ())}
    subs = sorted((subnet_from_json(s) for s in subnets), key=lambda s: (order.get(s.id, len(order)), s.id))
    mtu = d.get("mtu")
    return Network(
        id=str(d["id"]), name=str(d.get("name") or ""), mtu=int(mtu) if mtu else None, subnets=tuple(subs),
        network_type=str(d.get("provider:network_type") or ""),
        segmentation_id=int(seg) if isinstance(seg, int) else None,
    )
