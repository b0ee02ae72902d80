"""Name/id resolution with short-lived caches: extensions, networks with their subnets,
subnets by id/name/CIDR, security groups by name, and the project the ports belong to.

Networks (with their subnets) are also written to the store's catalog
(:mod:`cloudnic.store.catalog`) whenever Neutron answers. When Neutron cannot be reached
(``TryAgainLater``: refused, timed out, 5xx, rate limit), the last known facts are served
instead, from memory or from the catalog (an agent restarted during an outage), so that
pool hits keep working; a network Neutron says is gone (404) is never served from there.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import threading
import time
from collections.abc import Iterable
from typing import Any

from cloudnic.errors import CNIError, InvalidConfig, NotFound, TryAgainLater
from cloudnic.providers.base import Network, Subnet
from cloudnic.store.catalog import Catalog

from .client import NeutronClient
from .convert import network_from_json

log = logging.getLogger("cloudnic.providers.neutron")

NETWORK_KIND = "neutron-network"
STALE_RETRY_S = 5.0         # after a failed refresh, serve the stale facts this long before asking again
_UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")


def looks_like_id(value: str) -> bool:
    return bool(_UUID_RE.match(value))


class Directory:
    def __init__(self, client: NeutronClient, catalog: Catalog | None = None) -> None:
        self.client = client
        self.settings = client.settings
        self.catalog = catalog
        self._lock = threading.Lock()
        self._ext: frozenset[str] | None = None
        self._nets: dict[str, tuple[float, Network]] = {}
        self._sgs: dict[str, tuple[float, str]] = {}
        self._project: str | None = None
        self.stale_served = 0           # lookups answered from the last known facts (Neutron unreachable)

    # ---- extensions / project ---------------------------------------------------

    def extensions(self) -> frozenset[str]:
        with self._lock:
            if self._ext is not None:
                return self._ext
        reply = self.client.request("list_extensions", "GET", "/extensions", what="list Neutron extensions")
        aliases = frozenset(str(e.get("alias")) for e in (reply.body or {}).get("extensions", ()))
        with self._lock:
            self._ext = aliases
        return aliases

    def project_id(self) -> str:
        """The project ports are created in ("" when the credentials do not say)."""
        if self.settings.project_id:
            return self.settings.project_id
        with self._lock:
            if self._project is not None:
                return self._project
        try:        # the token request goes through the gate (rate limit, back-off after a 401)
            self.client.auth.ensure("find the project of the credentials")
            project = self.client.conn.session.get_project_id() or ""
        except Exception:       # an auth problem shows up, with a good message, on the next real call
            return ""
        with self._lock:
            self._project = str(project)
        return self._project

    # ---- networks and subnets ---------------------------------------------------

    def forget(self) -> None:
        with self._lock:
            self._nets.clear()
            self._sgs.clear()

    def get_network(self, name_or_id: str) -> Network:
        if not name_or_id:
            raise InvalidConfig("get_network: a Neutron network id or name is required")
        now = time.monotonic()
        with self._lock:
            hit = self._nets.get(name_or_id)
            if hit and now - hit[0] < self.settings.cache_ttl_s:
                return hit[1]
        stale = hit[1] if hit else None
        try:
            raw = self._find_network(name_or_id, quick=stale is not None)
            net_id = network_from_json(raw, ()).id      # a reply without a usable id is a ProviderError
            reply = self.client.request("list_subnets", "GET", "/subnets", what=f'list the subnets of network '
                                        f'"{name_or_id}"', query={"network_id": net_id},
                                        retries=0 if stale is not None else None)
        except TryAgainLater as e:
            known = stale or self._from_catalog(name_or_id)
            if known is None:
                raise
            self._serve_stale(name_or_id, known, e)
            return known
        subnets = list((reply.body or {}).get("subnets", ()))
        net = network_from_json(raw, subnets)
        with self._lock:
            self._nets[name_or_id] = (now, net)
            self._nets[net.id] = (now, net)
        if self.catalog is not None:
            self.catalog.safe_put(NETWORK_KIND, (net.id, name_or_id), {"network": raw, "subnets": subnets})
        return net

    def _serve_stale(self, name_or_id: str, net: Network, err: CNIError) -> None:
        """Answer from the last known facts for a while (no request per ADD during an outage)."""
        stamp = time.monotonic() + STALE_RETRY_S - self.settings.cache_ttl_s     # fresh for STALE_RETRY_S
        with self._lock:
            self._nets[name_or_id] = (stamp, net)
            self._nets[net.id] = (stamp, net)
            self.stale_served += 1
        log.warning("Neutron unreachable; using the last known facts of a network",
                    extra={"network": name_or_id, "error": err.msg})

    def _from_catalog(self, name_or_id: str) -> Network | None:
        if self.catalog is None:
            return None
        try:
            entry = self.catalog.get(NETWORK_KIND, name_or_id)
            if entry is None:
                return None
            return network_from_json(entry.data["network"], entry.data.get("subnets", ()))
        except (CNIError, KeyError, TypeError, ValueError) as e:
            log.warning("the cached facts of a network are unusable", extra={"network": name_or_id, "error": str(e)})
            return None

    def _find_network(self, name_or_id: str, *, quick: bool = False) -> dict[str, Any]:
        """The network's JSON; ``quick``: no retries (stale facts are there to fall back on)."""
        what = f'look up network "{name_or_id}"'
        retries = 0 if quick else None
        if looks_like_id(name_or_id):
            reply = self.client.request("get_network", "GET", f"/networks/{name_or_id}", what=what, accept=(404,),
                                        retries=retries)
            if reply.status != 404:
                return dict(reply.body["network"])
        reply = self.client.request("list_networks", "GET", "/networks", what=what, query={"name": name_or_id},
                                    retries=retries)
        found = list((reply.body or {}).get("networks", ()))
        if len(found) > 1:
            project = self.project_id()
            mine = [n for n in found if n.get("project_id") == project]
            found = mine or found
        if not found:
            raise NotFound(f'network "{name_or_id}" does not exist in Neutron at {self.client.display_endpoint}'
                           f"{self._visible()}; create it or fix the network's neutron_network setting")
        if len(found) > 1:
            ids = ", ".join(sorted(str(n["id"]) for n in found))
            raise InvalidConfig(f'network name "{name_or_id}" is ambiguous in Neutron ({ids}); use the id')
        return dict(found[0])

    def _visible(self) -> str:
        project = self.project_id()
        return f" (as seen by project {project})" if project else ""

    def find_subnet(self, net: Network, ref: str) -> Subnet:
        """A subnet of ``net`` by id, name or CIDR."""
        for s in net.subnets:
            if ref == s.id:
                return s
        by_name = [s for s in net.subnets if s.name and s.name == ref]
        if len(by_name) == 1:
            return by_name[0]
        if len(by_name) > 1:
            raise InvalidConfig(f'subnet name "{ref}" is ambiguous on network "{net.name or net.id}" '
                                f"({', '.join(s.id for s in by_name)}); use the id")
        try:
            cidr = ipaddress.ip_network(ref, strict=False)
        except ValueError:
            cidr = None
        for s in net.subnets:
            if cidr is not None and s.cidr == cidr:
                return s
        known = ", ".join(f"{s.id} ({s.name or '-'} {s.cidr})" for s in net.subnets) or "none"
        raise NotFound(f'subnet "{ref}" does not exist on Neutron network "{net.name or net.id}" ({net.id}); '
                       f"its subnets: {known}")

    def subnet_for_ip(self, net: Network, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> Subnet | None:
        for s in net.subnets:
            if ip in s.cidr:
                return s
        return None

    # ---- security groups --------------------------------------------------------

    def security_group_ids(self, refs: Iterable[str]) -> list[str]:
        out: list[str] = []
        project = self.project_id()
        for ref in refs:
            sid = ref if looks_like_id(ref) else self._sg_by_name(ref, project)
            if sid not in out:
                out.append(sid)
        return out

    def _sg_by_name(self, name: str, project: str) -> str:
        key = f"{project}/{name}"
        now = time.monotonic()
        with self._lock:
            hit = self._sgs.get(key)
            if hit and now - hit[0] < self.settings.cache_ttl_s:
                return hit[1]
        query = [("name", name), ("fields", "id"), ("fields", "project_id")]
        if project:
            query.append(("project_id", project))   # also makes Neutron create the project's "default" group
        reply = self.client.request("list_security_groups", "GET", "/security-groups",
                                    what=f'look up security group "{name}"', query=query)
        found = list((reply.body or {}).get("security_groups", ()))
        if not found:
            raise NotFound(f'security group "{name}" does not exist in Neutron'
                           f"{f' for project {project}' if project else ''}; create it or fix the "
                           "network's security_groups")
        if len(found) > 1:
            ids = ", ".join(sorted(str(g["id"]) for g in found))
            raise InvalidConfig(f'security group name "{name}" is ambiguous ({ids}); use the id')
        sid = str(found[0]["id"])
        with self._lock:
            self._sgs[key] = (now, sid)
        return sid
