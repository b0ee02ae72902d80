"""The ``neutron`` provider: a Neutron port per attachment, on openstacksdk.

* ``create_ports(spec, n)`` is one ``POST /v2.0/ports`` (``{"ports": [...]}`` when n > 1).
  Neutron's bulk create is atomic for the ports, but Zed leaks the IPAM allocations of a
  bulk that fails while allocating addresses (ML2 ``create_port_bulk`` allocates before
  its try block), so a bulk is preceded by a free-address check where the server
  offers ``network-ip-availability``.
* Ownership tags go in the create body when the server has
  ``tag-ports-during-bulk-creation``; otherwise one ``PUT /ports/<id>/tags`` per port
  follows (and a failure there deletes the new ports). The description carries the same
  ownership, so a port whose tagging never happened (a timeout, a crash) is still found
  by ``list_owned_ports``. Without ``standard-attr-tag`` ownership is carried in the port
  name (:mod:`.convert`).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import random
import re
import time
from collections.abc import Sequence
from typing import Any

from cloudnic.errors import (
    AddressExhausted,
    AddressUnavailable,
    CNIError,
    InvalidConfig,
    NotFound,
    ProviderError,
    TryAgainLater,
)
from cloudnic.providers.base import Capabilities, Health, Network, Port, PortSpec, Provider, Subnet
from cloudnic.store.catalog import Catalog

from .client import NeutronClient, build_connection
from .convert import (
    CLUSTER_TAG,
    NODE_TAG,
    decode_name,
    encode_name,
    name_prefix,
    owner_description,
    owner_of,
    port_from_json,
)
from .faults import IP_IN_USE, MAC_IN_USE, Fault, translate
from .lookup import Directory
from .settings import NeutronSettings
from .stats import CallStats

MAX_BULK = 500
_DEFAULT_OWNER = next(f.default for f in dataclasses.fields(PortSpec) if f.name == "device_owner")
_IP_RE = re.compile(r"IP address (\S+) ")
TAG_ON_CREATE_EXT = "tag-ports-during-bulk-creation"
TAG_EXT = "standard-attr-tag"
DESCRIPTION_EXT = "standard-attr-description"


class NeutronProvider(Provider):
    def __init__(self, settings: NeutronSettings, *, conn: Any = None, stats: CallStats | None = None,
                 catalog: Catalog | None = None) -> None:
        self.settings = settings
        self._own_conn = conn is None
        self.conn = conn if conn is not None else build_connection(settings)
        self.client = NeutronClient(settings, self.conn, stats=stats)
        self.dir = Directory(self.client, catalog)
        self._rng = random.Random()

    def use_catalog(self, catalog: Catalog | None) -> None:
        """Keep the networks' facts in ``catalog`` (the agent's store) and fall back on them
        when Neutron cannot be reached (see :mod:`.lookup`)."""
        self.dir.catalog = catalog

    @property
    def stats(self) -> CallStats:
        return self.client.stats

    # ---- capabilities -----------------------------------------------------------

    def uses_tags(self) -> bool:
        mode = self.settings.ownership
        if mode == "names":
            return False
        has = TAG_EXT in self.dir.extensions()
        if mode == "tags" and not has:
            raise ProviderError(f'provider.ownership = "tags" but Neutron at {self.client.display_endpoint} has '
                                f'no "{TAG_EXT}" extension; use ownership = "auto" or "names"')
        return has

    def describe(self) -> Capabilities:
        ext = self.dir.extensions()
        return Capabilities(name="neutron", bulk_create=True, hotplug_nic=False,
                            security_groups="security-group" in ext, tags=self.uses_tags(),
                            static_ip=True, static_mac=True)

    # ---- networks -----------------------------------------------------------------

    def get_network(self, name_or_id: str) -> Network:
        return self.dir.get_network(name_or_id)

    def find_subnet(self, network: str, ref: str) -> Subnet:
        """``network``'s subnet named by id, name or CIDR (``NotFound`` names both)."""
        return self.dir.find_subnet(self.get_network(network), ref)

    # ---- ports --------------------------------------------------------------------

    def create_ports(self, spec: PortSpec, count: int = 1) -> list[Port]:
        if not 1 <= count <= MAX_BULK:
            raise InvalidConfig(f"create_ports: count must be within 1..{MAX_BULK}, got {count}")
        if count > 1 and spec.fixed_ips:
            raise InvalidConfig("create_ports: fixed_ips cannot be combined with count > 1 (an address can be "
                                "held by one port only)")
        if count > 1 and spec.mac:
            raise InvalidConfig("create_ports: mac cannot be combined with count > 1 (a MAC can be held by one "
                                "port only)")
        net = self.get_network(spec.network_id)
        label = f'network "{net.name or net.id}"'
        tags_mode = self.uses_tags()
        entry = self._port_body(spec, net, tags_mode)
        if count > 1:
            self._check_room(net, entry, count)
        what = f"create {count} port{'s' if count > 1 else ''} on {label}"
        if count == 1:
            body: dict[str, Any] = {"port": entry}
        else:
            body = {"ports": [dict(entry) for _ in range(count)]}
        reply = self.client.request("create_ports", "POST", "/ports", what=what, body=body, accept=(409,))
        if reply.fault is not None:
            raise self._conflict(reply.fault, what, net, spec)
        raw = [reply.body["port"]] if count == 1 else list(reply.body["ports"])
        if tags_mode and spec.tags:
            raw = self._ensure_tags(raw, spec.tags, what)
        return [port_from_json(p, names_ownership=not tags_mode) for p in raw]

    def _port_body(self, spec: PortSpec, net: Network, tags_mode: bool) -> dict[str, Any]:
        owner = spec.device_owner
        if not owner or owner == _DEFAULT_OWNER:      # the caller left it to the provider: provider.device_owner
            owner = self.settings.device_owner
        entry: dict[str, Any] = {"network_id": net.id, "admin_state_up": True, "device_owner": owner}
        entry["name"] = spec.name if tags_mode else encode_name(spec.name, spec.tags)
        if spec.host_id:
            entry["binding:host_id"] = spec.host_id
        if spec.mac:
            entry["mac_address"] = spec.mac.lower()
        fixed = self._fixed_ips(spec, net)
        if fixed:
            entry["fixed_ips"] = fixed
        if spec.security_groups:
            entry["security_groups"] = self.dir.security_group_ids(spec.security_groups)
        if self.settings.auth_type == "noauth":
            entry["project_id"] = self.settings.project_id
        ext = self.dir.extensions()
        if tags_mode and spec.tags and TAG_ON_CREATE_EXT in ext:
            entry["tags"] = list(spec.tags)
        elif tags_mode and owner_of(spec.tags) and DESCRIPTION_EXT in ext:
            entry["description"] = owner_description(spec.tags)
        return entry

    def _fixed_ips(self, spec: PortSpec, net: Network) -> list[dict[str, str]]:
        out: list[dict[str, str]] = []
        covered: set[str] = set()
        for raw in spec.fixed_ips:
            ip = ipaddress.ip_address(raw)
            sub = self.dir.subnet_for_ip(net, ip)
            if sub is None:
                cidrs = ", ".join(str(s.cidr) for s in net.subnets) or "no subnets"
                raise AddressUnavailable(f'address {ip} is outside every subnet of network "{net.name or net.id}" '
                                         f"({cidrs}); ask for an address inside one of them")
            out.append({"subnet_id": sub.id, "ip_address": str(ip)})
            covered.add(sub.id)
        for ref in spec.subnet_ids:
            sid = self.dir.find_subnet(net, ref).id
            if sid not in covered:
                out.append({"subnet_id": sid})
                covered.add(sid)
        return out

    def _check_room(self, net: Network, entry: dict[str, Any], count: int) -> None:
        """Refuse a bulk the network cannot hold before Neutron leaks its addresses."""
        if "network-ip-availability" not in self.dir.extensions():
            return
        reply = self.client.request("ip_availability", "GET", f"/network-ip-availabilities/{net.id}",
                                    what=f'check free addresses on network "{net.name or net.id}"',
                                    expected=(401, 403, 404))     # not allowed or not there: skip the check
        if reply.fault is not None or not isinstance(reply.body, dict):
            return
        free = {str(s["subnet_id"]): int(s.get("total_ips", 0)) - int(s.get("used_ips", 0))
                for s in reply.body.get("network_ip_availability", {}).get("subnet_ip_availability", ())}
        wanted = [f["subnet_id"] for f in entry.get("fixed_ips", ())]
        groups: list[tuple[str, int]] = []
        if wanted:
            groups = [(f"subnet {sid} has", free[sid]) for sid in wanted if sid in free]
        else:
            for version in (4, 6):
                subs = [s for s in net.subnets if s.version == version and s.id in free]
                if subs:
                    groups.append((f"its IPv{version} subnets have", sum(free[s.id] for s in subs)))
        short = [(name, n) for name, n in groups if n < count]
        if short:
            name, n = short[0]
            raise AddressExhausted(f'network "{net.name or net.id}": {name} {n} free addresses, fewer than the '
                                   f"{count} ports asked for in one bulk; lower the pool batch or add a subnet")

    def _conflict(self, fault: Fault, what: str, net: Network, spec: PortSpec) -> CNIError:
        ep = self.client.display_endpoint
        if fault.type in IP_IN_USE:
            m = _IP_RE.search(fault.message)
            ip = m.group(1) if m else (str(spec.fixed_ips[0]) if spec.fixed_ips else "")
            holder, hid = self._holder(net, ("fixed_ips", f"ip_address={ip}")) if ip else ("", "")
            return AddressUnavailable(f'address {ip} on network "{net.name or net.id}" is already in use'
                                      f"{holder}; choose another address or release that port", fault.details,
                                      holder=hid)
        if fault.type in MAC_IN_USE and spec.mac:
            holder, hid = self._holder(net, ("mac_address", spec.mac.lower()))
            return AddressUnavailable(f'MAC {spec.mac} on network "{net.name or net.id}" is already in use'
                                      f"{holder}; choose another MAC or release that port", fault.details,
                                      holder=hid)
        return translate(fault, what=what, endpoint=ep, project=self.dir.project_id() or self.settings.project_id)

    def _holder(self, net: Network, filt: tuple[str, str]) -> tuple[str, str]:
        """(" by port <id> (...)" for a message, the port id) of the port holding an address."""
        try:
            reply = self.client.request("find_holder", "GET", "/ports", what="find the port holding an address",
                                        query=[filt, ("network_id", net.id)], timeout=min(5.0,
                                        self.settings.timeout_s), retries=0)
        except CNIError:
            return "", ""
        found = (reply.body or {}).get("ports", ())
        if not found:
            return "", ""
        p = found[0]
        name, _ = decode_name(str(p.get("name") or ""))
        bits = [f'name "{name}"', f"device_owner {p.get('device_owner') or '-'}"]
        if p.get("binding:host_id"):
            bits.append(f"host {p['binding:host_id']}")
        return f" by port {p.get('id')} ({', '.join(bits)})", str(p.get("id") or "")

    def _ensure_tags(self, raw: list[dict[str, Any]], tags: Sequence[str], what: str) -> list[dict[str, Any]]:
        """Set the tags on every new port the create did not tag (one PUT each)."""
        out: list[dict[str, Any]] = []
        try:
            for port in raw:
                have = [str(t) for t in port.get("tags") or ()]
                if set(tags) <= set(have):
                    out.append(port)
                    continue
                merged = list(dict.fromkeys((*have, *tags)))
                reply = self.client.request("set_tags", "PUT", f"/ports/{port['id']}/tags",
                                            what=f"tag port {port['id']}", body={"tags": merged})
                out.append(dict(port, tags=(reply.body or {}).get("tags", merged)))
        except CNIError as e:
            self._undo([str(p["id"]) for p in raw])
            raise type(e)(f"{what}: tagging the new ports failed, they were deleted: {e.msg}", e.details) from None
        return out

    def _undo(self, ids: list[str]) -> None:
        try:
            self.delete_ports(ids)
        except CNIError:
            pass        # tagged or named ports are found again by list_owned_ports; untagged ones are logged

    def get_port(self, port_id: str) -> Port | None:
        if not port_id:
            raise InvalidConfig("get_port: a port id is required")
        reply = self.client.request("get_port", "GET", f"/ports/{port_id}", what=f"get port {port_id}",
                                    expected=(404,))
        if reply.status == 404:
            return None
        return port_from_json(reply.body["port"], names_ownership=not self.uses_tags())

    def update_port(self, port_id: str, *, name: str | None = None,
                    security_groups: tuple[str, ...] | None = None,
                    tags: tuple[str, ...] | None = None) -> Port:
        what = f"update port {port_id}"
        tags_mode = self.uses_tags()
        attrs: dict[str, Any] = {}
        if security_groups is not None:
            attrs["security_groups"] = self.dir.security_group_ids(security_groups)
        if tags_mode:
            if name is not None:
                attrs["name"] = name
            if tags is not None:
                self._request_port(what, "set_tags", "PUT", f"/ports/{port_id}/tags", {"tags": list(tags)})
        elif name is not None or tags is not None:
            new_name, new_tags = name, tags
            if new_name is None or new_tags is None:
                current = self.get_port(port_id)
                if current is None:
                    raise NotFound(f"{what}: the port does not exist in Neutron")
                new_name = current.name if new_name is None else new_name
                new_tags = current.tags if new_tags is None else new_tags
            attrs["name"] = encode_name(new_name, new_tags)
        if attrs:
            raw = self._request_port(what, "update_port", "PUT", f"/ports/{port_id}", {"port": attrs})["port"]
            return port_from_json(raw, names_ownership=not tags_mode)
        port = self.get_port(port_id)
        if port is None:
            raise NotFound(f"{what}: the port does not exist in Neutron")
        return port

    def _request_port(self, what: str, op: str, method: str, path: str, body: Any) -> Any:
        reply = self.client.request(op, method, path, what=what, body=body, accept=(404,))
        if reply.status == 404:
            raise NotFound(f"{what}: the port does not exist in Neutron", reply.fault.details if reply.fault else "")
        return reply.body

    def delete_ports(self, port_ids: list[str]) -> None:
        failed: list[tuple[str, CNIError]] = []
        for pid in dict.fromkeys(port_ids):
            if not pid:
                continue
            try:
                self.client.request("delete_port", "DELETE", f"/ports/{pid}", what=f"delete port {pid}",
                                    expected=(404,))
            except CNIError as e:
                failed.append((pid, e))
        if failed:
            pid, first = failed[0]
            more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
            raise type(first)(f"{first.msg}{more}", first.details)

    def list_owned_ports(self, cluster_id: str, node: str) -> list[Port]:
        tags_mode = self.uses_tags()
        query: list[tuple[str, str]] = []
        if self.settings.auth_type == "noauth":
            query.append(("project_id", self.settings.project_id))
        if tags_mode:
            wanted = (CLUSTER_TAG + cluster_id, NODE_TAG + node)
            for t in wanted:
                if "," in t or " " in t or not t.split("=", 1)[1]:
                    raise InvalidConfig(f"list_owned_ports: cluster id and node must be non-empty and contain no "
                                        f"',' or space (got {cluster_id!r}, {node!r})")
            what = f"list the ports of node {node} in cluster {cluster_id}"
            raw = self._list_ports([*query, ("tags", ",".join(wanted))], what)
            ext = self.dir.extensions()
            if TAG_ON_CREATE_EXT not in ext and DESCRIPTION_EXT in ext:
                seen = {r.get("id") for r in raw}
                marked = self._list_ports([*query, ("description", " ".join(wanted))], what)
                raw += [r for r in marked if r.get("id") not in seen]
            ports = [port_from_json(p) for p in raw]
            return [p for p in ports if owner_of(p.tags) == (cluster_id, node)]
        prefix = name_prefix(cluster_id, node)      # Neutron filters names exactly only: filter here
        raw = self._list_ports(query, f"list the ports of node {node} in cluster {cluster_id}")
        return [port_from_json(r, names_ownership=True) for r in raw
                if str(r.get("name") or "").startswith(prefix)]

    def _list_ports(self, query: list[tuple[str, str]], what: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        page = list(query)
        for _ in range(10000):
            reply = self.client.request("list_ports", "GET", "/ports", what=what, query=page)
            body = reply.body or {}
            out.extend(body.get("ports", ()))
            marker = _next_marker(body.get("ports_links", ()))
            if not marker:
                return out
            page = [*query, ("marker", marker), ("limit", str(len(body.get("ports", ())) or 100))]
        return out

    # ---- readiness ----------------------------------------------------------------

    def wait_active(self, port_id: str, timeout: float | None = None) -> Port:
        """Poll until the port is ACTIVE (Neutron's L2 agent wired it); ``TryAgainLater`` on timeout."""
        limit = self.settings.active_timeout_s if timeout is None else timeout
        deadline = time.monotonic() + limit
        attempt = 0
        while True:
            port = self.get_port(port_id)
            if port is None:
                raise NotFound(f"port {port_id} disappeared from Neutron while waiting for it to become ACTIVE")
            if port.status == "ACTIVE":
                return port
            if port.extra.get("binding:vif_type") == "binding_failed":
                raise TryAgainLater(f"port {port_id}: Neutron could not bind it to host {port.host_id or '-'} "
                                    "(vif_type binding_failed); is a Neutron L2 agent alive on that host?")
            left = deadline - time.monotonic()
            if left <= 0:
                raise TryAgainLater(f"port {port_id} is still {port.status} after {limit:g}s; Neutron's L2 agent "
                                    f"on host {port.host_id or '-'} has not wired it yet")
            delay = min(left, 2.0, 0.2 * 2 ** attempt) * (0.5 + self._rng.random() / 2)
            attempt += 1
            time.sleep(delay)

    def health(self) -> Health:
        started = time.monotonic()
        try:
            self.client.request("health", "GET", "/networks", what="health check",
                                query=[("limit", "1"), ("fields", "id")],
                                timeout=min(5.0, self.settings.timeout_s), retries=0)
        except CNIError as e:
            return Health(ok=False, detail=str(e))
        ms = (time.monotonic() - started) * 1000
        return Health(ok=True, detail=f"neutron at {self.client.display_endpoint} answered in {ms:.0f} ms")

    def close(self) -> None:
        if self._own_conn:
            try:
                self.conn.close()
            except Exception:
                pass


def _next_marker(links: Any) -> str:
    import urllib.parse

    for link in links or ():
        if isinstance(link, dict) and link.get("rel") == "next":
            q = urllib.parse.parse_qs(urllib.parse.urlsplit(str(link.get("href", ""))).query)
            return (q.get("marker") or [""])[0]
    return ""


__all__ = ["NeutronProvider"]
