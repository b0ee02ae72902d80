"""The veth pair shared by the bridge and routed modes, and their common plug/unplug/check.

Creation is one RTM_NEWLINK: the host end is made in the host netns (up, its MAC, the
MTU, already enslaved when a master is given) and the peer directly in the sandbox netns
with its final ifname, the port MAC and the MTU (``IFLA_NET_NS_FD`` on the peer). No
temporary name, no move, no rename. Deleting the host end deletes the peer and every
address, route and neighbour entry on either end, which makes undo and DEL one call.

IPv6 addresses are added with ``IFA_F_NODAD``: IPAM guarantees uniqueness, so DAD would
only delay the address by ~1 s. ``accept_dad`` is left alone: the only address still
going through DAD is the kernel's own link-local, which nothing here depends on (the
routed gateway neighbour is permanent, bridge gateways are global addresses), and
setting it would cost an extra netns round trip per plug.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import logging
from collections.abc import Iterable
from typing import Any

from cloudnic.dataplane.base import Attachment, Dataplane, IPAddress, IPInterface, Plugged, RouteSpec
from cloudnic.dataplane.check import raise_if, sandbox_problems
from cloudnic.dataplane.kernel import Kernel, LinkInfo, cause_errno
from cloudnic.dataplane.names import HOST_IFNAME_RE, derived_mac, host_ifname_for
from cloudnic.dataplane.netns import NetnsHandle, netns_socket
from cloudnic.dataplane.spec import PlugSpec, prepare
from cloudnic.dataplane.undo import Undo
from cloudnic.errors import CNIError, DataplaneError, InvalidConfig

log = logging.getLogger(__name__)

SANDBOX = "in the sandbox"
HOST = "in the host netns"


def require_free_ifname(sb: Kernel, ifname: str) -> None:
    """ADD must fail when the ifname already exists in the sandbox (CNI spec)."""
    if sb.link(ifname) is not None:
        raise InvalidConfig(f"CNI_IFNAME {ifname!r} already exists in the sandbox network namespace; "
                            "choose another ifname or DEL the attachment that owns it")


def create_veth(host: Kernel, sb: Kernel, sandbox_fd: int, spec: PlugSpec, *, host_mac: str,
                master: int = 0) -> None:
    """The pair in one request; an existing name is reported on the side where it exists."""
    link: dict[str, Any] = {
        "ifname": spec.host_ifname, "kind": "veth", "address": host_mac, "mtu": spec.mtu, "state": "up",
        "peer": {"ifname": spec.ifname, "net_ns_fd": sandbox_fd, "address": spec.mac, "mtu": spec.mtu},
    }
    if master:
        link["master"] = master
    try:
        host.add_link(f"veth {spec.host_ifname} (host) <-> {spec.ifname} (sandbox)", **link)
    except DataplaneError as e:
        if cause_errno(e) != errno.EEXIST:
            raise
        require_free_ifname(sb, spec.ifname)
        raise DataplaneError(f"host interface {spec.host_ifname} already exists in the host netns; a stale "
                             "attachment with the same key? DEL it (or delete the link) and retry",
                             e.details) from e


def configure_sandbox(sb: Kernel, spec: PlugSpec, addresses: Iterable[IPInterface],
                      routes: Iterable[RouteSpec], neighbours: Iterable[tuple[IPAddress, str]] = ()) -> int:
    """lo up; then on ``spec.ifname``: addresses, up, routes, permanent neighbours. Its ifindex."""
    lo = sb.link("lo")
    if lo is not None and not lo.up:
        sb.set_up(lo.index, "lo")
    link = sb.link(spec.ifname)
    if link is None:
        raise DataplaneError(f"{spec.ifname} vanished from the sandbox right after it was created")
    for a in addresses:
        sb.add_address(link.index, a, spec.ifname)
    sb.set_up(link.index, spec.ifname)
    for ip, mac in neighbours:
        sb.add_neigh(link.index, spec.ifname, ip, mac)
    for r in routes:
        dst = ipaddress.ip_network(r.dst)
        gw = ipaddress.ip_address(r.gw) if r.gw else None
        sb.add_route(link.index, spec.ifname, dst, gw, scope_link=r.scope_link)
    return link.index


def remove_sandbox_link(sandbox_fd: int | None, att: Attachment, plugged: Plugged | None, kind: str) -> None:
    """Delete the pod's link (of ``kind``) in the sandbox; nothing to do when the netns is gone.

    With a record the link under our ifname is ours; without one (DEL after a failed ADD)
    its MAC must be the port's too, so a foreign link of the same name is spared.
    """
    if sandbox_fd is None:
        return
    mac = "" if plugged else att.mac
    ifname = plugged.sandbox_ifname if plugged else att.ifname
    with contextlib.closing(netns_socket(sandbox_fd)) as sipr:
        delete_if_ours(Kernel(sipr, SANDBOX), ifname, kind, mac)


def delete_if_ours(kernel: Kernel, ifname: str, kind: str, mac: str = "") -> bool:
    """Delete ``ifname`` when it is a ``kind`` link (with ``mac``, if given); never someone else's."""
    link = kernel.link(ifname)
    if link is None:
        return False
    if link.kind != kind or (mac and link.mac != mac.lower()):
        log.warning("not deleting %s %s: it is a %s link with MAC %s, not ours", ifname, kernel.where,
                    link.kind or "plain", link.mac)
        return False
    return kernel.delete_link(link.index, ifname)


class VethDataplane(Dataplane):
    """Plug skeleton of the veth modes; subclasses add the host side and the sandbox plan."""

    def __init__(self, mtu: int, host_netns_fd: int | None) -> None:
        self.mtu = mtu
        self._host = NetnsHandle(host_netns_fd)

    # ---- subclass hooks ---------------------------------------------------------------

    def _gateway_in_subnet(self) -> bool:
        return True

    def _plug(self, host: Kernel, sb: Kernel, sandbox_fd: int, spec: PlugSpec, undo: Undo) -> Plugged:
        raise NotImplementedError

    def _sandbox_addresses(self, att: Attachment) -> tuple[IPInterface, ...]:
        return tuple(att.addresses)

    def _check_more(self, host: Kernel, sb: Kernel, sb_link: LinkInfo | None, att: Attachment,
                    plugged: Plugged) -> list[str]:
        return []

    # ---- the contract -----------------------------------------------------------------

    def host_kernel(self) -> Kernel:
        return Kernel(self._host.ipr(), HOST, self._host.discard)

    def plug(self, sandbox_fd: int, att: Attachment) -> Plugged:
        spec = prepare(att, self.mtu, host_end=True, gateway_in_subnet=self._gateway_in_subnet())
        with contextlib.closing(netns_socket(sandbox_fd)) as sipr:
            sb = Kernel(sipr, SANDBOX)
            require_free_ifname(sb, spec.ifname)
            undo = Undo()
            try:
                return self._plug(self.host_kernel(), sb, sandbox_fd, spec, undo)
            except BaseException as e:
                undo.run()
                if isinstance(e, CNIError | KeyboardInterrupt | SystemExit):
                    raise
                raise DataplaneError(f"plugging {spec.ifname} failed unexpectedly: {type(e).__name__}",
                                     str(e)) from e

    def host_mac_for(self, host_ifname: str) -> str:
        return derived_mac("host:" + host_ifname)

    def unplug(self, sandbox_fd: int | None, att: Attachment, plugged: Plugged | None) -> None:
        host_ifname = (plugged.host_ifname if plugged else "") or att.host_ifname or host_ifname_for(att.key)
        delete_if_ours(self.host_kernel(), host_ifname, "veth")
        remove_sandbox_link(sandbox_fd, att, plugged, "veth")

    def check(self, sandbox_fd: int, att: Attachment, plugged: Plugged) -> None:
        with contextlib.closing(netns_socket(sandbox_fd)) as sipr:
            sb = Kernel(sipr, SANDBOX)
            link, problems = sandbox_problems(sb, plugged, "veth", self._sandbox_addresses(att))
            problems += self._check_more(self.host_kernel(), sb, link, att, plugged)
        raise_if(problems, f"attachment {att.key} differs from what ADD made")

    def host_objects(self) -> set[str]:
        """Host ends named like ``host_ifname_for`` that are no bridge port (routed mode).

        Every routed dataplane of one host netns sees the same set: reconcile against the
        union of all networks' records, not per network.
        """
        return {link.ifname for link in self.host_kernel().links()
                if link.kind == "veth" and not link.master and HOST_IFNAME_RE.match(link.ifname)}

    def close(self) -> None:
        self._host.close()
