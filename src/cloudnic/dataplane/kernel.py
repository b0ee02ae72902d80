"""A thin, typed view of one netlink socket, translating kernel errors at the boundary.

Every call names the object it touches and where ("in the sandbox", "in the host
netns"), so an error reads like ``adding address 10.0.0.5/24 to eth0 in the sandbox:
already exists``. Deletes treat "already gone" as success and say so by returning False.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl.ifaddrmsg import IFA_F_NODAD

from cloudnic.dataplane.base import IPAddress, IPInterface
from cloudnic.errors import CNIError, InternalError, from_errno, is_gone

log = logging.getLogger(__name__)

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Route = tuple[IPNetwork, IPAddress | None]

IFF_UP = 0x1
NUD_PERMANENT = 0x80
RT_SCOPE_LINK = 253
RT_TABLE_MAIN = 254


def cause_errno(exc: BaseException) -> int | None:
    """The errno behind a translated kernel error (its ``__cause__``), if any."""
    cause = exc.__cause__
    code = getattr(cause, "code", None) if isinstance(cause, NetlinkError) else getattr(cause, "errno", None)
    return code if isinstance(code, int) else None


@dataclass(frozen=True)
class LinkInfo:
    index: int
    ifname: str
    kind: str          # "" for a link without IFLA_INFO_KIND (lo, physical NICs)
    mac: str
    mtu: int
    up: bool           # administratively up (IFF_UP)
    master: int        # ifindex of the master (bridge), 0 when none


def _link_info(msg: Any) -> LinkInfo:
    return LinkInfo(
        index=int(msg["index"]),
        ifname=str(msg.get("ifname") or ""),
        kind=str(msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") or ""),
        mac=str(msg.get("address") or "").lower(),
        mtu=int(msg.get("mtu") or 0),
        up=bool(int(msg["flags"]) & IFF_UP),
        master=int(msg.get("master") or 0),
    )


class Kernel:
    """Netlink operations on one socket. ``where`` names its netns in messages."""

    def __init__(self, ipr: Any, where: str, on_socket_error: Callable[[], None] | None = None) -> None:
        self.ipr = ipr
        self.where = where
        self._on_socket_error = on_socket_error

    @contextlib.contextmanager
    def call(self, what: str, hint: str = "") -> Iterator[None]:
        """Translate whatever the kernel or pyroute2 raises into a cloudnic error about ``what``."""
        try:
            yield
        except CNIError:
            raise
        except NetlinkError as e:
            raise from_errno(e.code, f"{what} {self.where}", hint) from e
        except OSError as e:
            if self._on_socket_error is not None:
                self._on_socket_error()
            raise from_errno(e.errno or 0, f"{what} {self.where} (netlink socket error)", hint) from e
        except Exception as e:
            raise InternalError(f"{what} {self.where}: unexpected {type(e).__name__}", str(e)) from e

    # ---- links ------------------------------------------------------------------------

    def link(self, ifname: str) -> LinkInfo | None:
        try:
            with self.call(f"looking up link {ifname}"):
                msgs = self.ipr.link("get", ifname=ifname)
        except CNIError as e:
            if is_gone(e.__cause__ or e):
                return None
            raise
        return _link_info(msgs[0]) if msgs else None

    def links(self) -> list[LinkInfo]:
        with self.call("listing links"):
            return [_link_info(m) for m in self.ipr.get_links()]

    def add_link(self, what: str, hint: str = "", **spec: Any) -> None:
        with self.call(f"creating {what}", hint):
            self.ipr.link("add", **spec)

    def set_link(self, index: int, what: str, **spec: Any) -> None:
        with self.call(f"changing {what}"):
            self.ipr.link("set", index=index, **spec)

    def set_up(self, index: int, ifname: str) -> None:
        self.set_link(index, f"link {ifname} to up", state="up")

    def delete_link(self, index: int, ifname: str) -> bool:
        """Delete a link; False when it was already gone."""
        try:
            with self.call(f"deleting link {ifname}"):
                self.ipr.link("del", index=index)
        except CNIError as e:
            if is_gone(e.__cause__ or e):
                return False
            raise
        return True

    # ---- addresses --------------------------------------------------------------------

    def add_address(self, index: int, iface: IPInterface, ifname: str, exist_ok: bool = False) -> bool:
        """Add ``iface`` (IPv6 without DAD); False when ``exist_ok`` and it was already there."""
        flags = IFA_F_NODAD if iface.version == 6 else 0
        try:
            with self.call(f"adding address {iface.with_prefixlen} to {ifname}"):
                self.ipr.addr("add", index=index, address=str(iface.ip), prefixlen=iface.network.prefixlen,
                              flags=flags)
        except CNIError as e:
            if exist_ok and cause_errno(e) == errno.EEXIST:
                return False
            raise
        return True

    def delete_address(self, index: int, iface: IPInterface, ifname: str) -> bool:
        try:
            with self.call(f"removing address {iface.with_prefixlen} from {ifname}"):
                self.ipr.addr("del", index=index, address=str(iface.ip), prefixlen=iface.network.prefixlen)
        except CNIError as e:
            if is_gone(e.__cause__ or e) or cause_errno(e) == errno.EADDRNOTAVAIL:
                return False
            raise
        return True

    def addresses(self, index: int) -> set[IPInterface]:
        with self.call("listing addresses"):
            msgs = self.ipr.get_addr(index=index)
        return {ipaddress.ip_interface(f"{m.get('address')}/{m['prefixlen']}")
                for m in msgs if m.get("index", index) == index and m.get("address")}

    # ---- routes and neighbours --------------------------------------------------------

    def add_route(self, index: int, ifname: str, dst: IPNetwork, gw: IPAddress | None = None,
                  scope_link: bool = False) -> None:
        spec: dict[str, Any] = {"dst": dst.with_prefixlen, "oif": index, "table": RT_TABLE_MAIN}
        if gw is not None:
            spec["gateway"] = str(gw)
        if scope_link and dst.version == 4:
            spec["scope"] = RT_SCOPE_LINK
        via = f" via {gw}" if gw is not None else ""
        with self.call(f"adding route {dst.with_prefixlen}{via} dev {ifname}"):
            self.ipr.route("add", **spec)

    def routes(self, index: int) -> set[Route]:
        """(dst, gateway) of the main-table routes leaving through ``index``."""
        out: set[Route] = set()
        with self.call("listing routes"):
            msgs = self.ipr.get_routes(table=RT_TABLE_MAIN)
        for m in msgs:
            if m.get("oif") != index:
                continue
            zero = "0.0.0.0" if m["family"] == 2 else "::"
            dst = ipaddress.ip_network(f"{m.get('dst') or zero}/{m['dst_len']}", strict=False)
            gw = m.get("gateway")
            out.add((dst, ipaddress.ip_address(gw) if gw else None))
        return out

    def add_neigh(self, index: int, ifname: str, ip: IPAddress, mac: str) -> None:
        with self.call(f"adding permanent neighbour {ip} -> {mac} on {ifname}"):
            self.ipr.neigh("add", dst=str(ip), lladdr=mac, ifindex=index, state=NUD_PERMANENT)

    def neigh(self, index: int, ip: IPAddress) -> tuple[str, bool] | None:
        """(lladdr, permanent) of the neighbour entry for ``ip`` on ``index``, None if absent."""
        with self.call(f"looking up neighbour {ip}"):
            msgs = self.ipr.get_neighbours(ifindex=index, dst=str(ip))
        for m in msgs:
            if m.get("ifindex") == index and m.get("dst") and ipaddress.ip_address(m.get("dst")) == ip:
                return str(m.get("lladdr") or "").lower(), bool(int(m["state"]) & NUD_PERMANENT)
        return None
