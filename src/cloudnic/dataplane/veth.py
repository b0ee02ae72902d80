"""The veth pair shared by the bridge and routed modes, and their common plug/unplug/check.

Creation is one RTM_NEWLINK: the host end is made in the host netns (up, its MAC, the
MTU, already enslaved when a master is given) and the peer directly in the sandbox netns
with its final ifname, the port MAC and the MTU (``IFLA_NET_NS_FD`` on the peer). No
temporary name, no move, no rename. Deleting the host end deletes the peer and every
address, route and neighbour entry on either end, which makes undo and DEL one call; DEL
returns once the pair is gone, without waiting for the kernel's clean-up (``unlink.py``).
A taken name is found out from the create's EEXIST (no pre-check), then reported on the
side where it exists. The sandbox side (lo up, addresses, link up, permanent neighbours,
routes) is ONE send of several messages on one sandbox socket (``sandbox_requests``).
With ``deferred_delete`` DEL buries the host end instead of deleting it (``graveyard.py``).

IPv6 addresses are added with ``IFA_F_NODAD``: IPAM guarantees uniqueness, so DAD would
only delay the address by ~1 s. ``accept_dad`` is left alone: the only address still
going through DAD is the kernel's own link-local, which nothing here depends on (the
routed gateway neighbour is permanent, bridge gateways are global addresses), and
setting it would cost an extra netns round trip per plug.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import ipaddress
import logging
from collections.abc import Callable, Iterable

from cloudnic.dataplane import links, rtmsg
from cloudnic.dataplane.base import Attachment, Dataplane, IPAddress, IPInterface, Plugged, RouteSpec
from cloudnic.dataplane.check import raise_if, sandbox_problems
from cloudnic.dataplane.graveyard import GRAVEYARD_GROUP, Graveyard
from cloudnic.dataplane.kernel import Kernel, LinkInfo, Request, cause_errno
from cloudnic.dataplane.links import LinkChange, LinkSpec, Veth, VethPeer
from cloudnic.dataplane.names import HOST_IFNAME_RE, derived_mac, host_ifname_for
from cloudnic.dataplane.netns import NetnsHandle, netns_socket
from cloudnic.dataplane.spec import PlugSpec, prepare
from cloudnic.dataplane.undo import Undo
from cloudnic.dataplane.unlink import Unlinker
from cloudnic.errors import CNIError, DataplaneError, InvalidConfig

log = logging.getLogger(__name__)

SANDBOX = "in the sandbox"
HOST = "in the host netns"
LOOPBACK_INDEX = 1                 # lo is always ifindex 1 of its netns


def require_free_ifname(sb: Kernel, ifname: str) -> None:
    """ADD must fail when the ifname already exists in the sandbox (CNI spec)."""
    if sb.link(ifname) is not None:
        raise InvalidConfig(f"CNI_IFNAME {ifname!r} already exists in the sandbox network namespace; "
                            "choose another ifname or DEL the attachment that owns it")


def veth_spec(spec: PlugSpec, sandbox_fd: int, *, host_mac: str, master: int = 0) -> LinkSpec:
    """The pair: host end up (MAC, MTU, master), the peer straight into the sandbox, down; one
    queue each way per end, as the kernel would settle on anyway, but without the RCU wait
    under the rtnl lock that settling costs (``LinkSpec.queues``)."""
    peer = VethPeer(ifname=spec.ifname, netns_fd=sandbox_fd, mac=spec.mac, mtu=spec.mtu, queues=1)
    return LinkSpec(ifname=spec.host_ifname, kind=Veth(peer), mac=host_mac, mtu=spec.mtu, up=True, master=master,
                    queues=1)


def create_veth(host: Kernel, sb: Kernel, sandbox_fd: int, spec: PlugSpec, *, host_mac: str,
                master: int = 0, reap: Callable[[LinkInfo], bool] | None = None) -> int:
    """The pair in one request; an existing name is reported on the side where it exists.
    Returns the peer's ifindex in the sandbox as the kernel echoed it (0 when it did not:
    ``configure_sandbox`` then looks the peer up by name).

    There is no pre-check: the exclusive create fails with EEXIST, and only then is the
    sandbox asked whether the name is taken there (the CNI spec's error) or on the host.
    When the sandbox's link is the peer of a buried host end, ``reap`` deletes it (True)
    and the create is retried once.
    """
    what = f"veth {spec.host_ifname} (host) <-> {spec.ifname} (sandbox)"
    link = veth_spec(spec, sandbox_fd, host_mac=host_mac, master=master)
    try:
        echoed = host.add_link(link, what, echo=True)
    except DataplaneError as e:
        if cause_errno(e) != errno.EEXIST:
            raise
        taken = sb.link(spec.ifname)
        if taken is not None and reap is not None and reap(taken):
            echoed = host.add_link(link, what, echo=True)
            return echoed.link if echoed is not None else 0
        require_free_ifname(sb, spec.ifname)
        raise DataplaneError(f"host interface {spec.host_ifname} already exists in the host netns; a stale "
                             "attachment with the same key? DEL it (or delete the link) and retry",
                             e.details) from e
    return echoed.link if echoed is not None else 0


def sandbox_requests(index: int, ifname: str, addresses: Iterable[IPInterface], routes: Iterable[RouteSpec],
                     neighbours: Iterable[tuple[IPAddress, str]] = ()) -> list[Request]:
    """lo up; then on ``index``: addresses, up, permanent neighbours, routes (the kernel's order)."""
    reqs = [links.setlink(LOOPBACK_INDEX, LinkChange(up=True), "setting lo up")]
    reqs += [rtmsg.newaddr(index, a, f"adding address {a.with_prefixlen} to {ifname}") for a in addresses]
    reqs.append(links.setlink(index, LinkChange(up=True), f"setting {ifname} up"))
    reqs += [rtmsg.newneigh(index, ip, mac, f"adding permanent neighbour {ip} -> {mac} on {ifname}")
             for ip, mac in neighbours]
    for r in routes:
        dst = ipaddress.ip_network(r.dst)
        gw = ipaddress.ip_address(r.gw) if r.gw else None
        via = f" via {gw}" if gw is not None else ""
        reqs.append(rtmsg.newroute(index, dst, gw, r.scope_link, f"adding route {r.dst}{via} dev {ifname}"))
    return reqs


def configure_sandbox(sb: Kernel, spec: PlugSpec, addresses: Iterable[IPInterface],
                      routes: Iterable[RouteSpec], neighbours: Iterable[tuple[IPAddress, str]] = (), *,
                      index: int = 0) -> int:
    """Configure ``spec.ifname`` in the sandbox in ONE send (see ``sandbox_requests``); its ifindex.
    ``index``: the link's ifindex when known (echoed at creation); else it is looked up by name."""
    if not index:
        link = sb.link(spec.ifname)
        if link is None:
            raise DataplaneError(f"{spec.ifname} vanished from the sandbox right after it was created")
        index = link.index
    sb.batch(sandbox_requests(index, spec.ifname, addresses, routes, neighbours),
             f"configuring {spec.ifname}")
    return index


def remove_sandbox_link(sandbox_fd: int | None, att: Attachment, plugged: Plugged | None, kind: str,
                        unlinker: Unlinker | None = None) -> None:
    """Delete the pod's link (of ``kind``) in the sandbox; nothing to do when the netns is gone.

    With a record the link under our ifname is ours; without one (DEL after a failed ADD)
    its MAC must be the port's too, so a foreign link of the same name is spared. With
    ``unlinker`` the call returns once the link is gone (``unlink.py``).
    """
    if sandbox_fd is None:
        return
    mac = "" if plugged else att.mac
    ifname = plugged.sandbox_ifname if plugged else att.ifname
    delete = functools.partial(unlinker.delete, netns_fd=sandbox_fd) if unlinker is not None else None
    with contextlib.closing(netns_socket(sandbox_fd)) as sock:
        delete_if_ours(Kernel(sock, SANDBOX), ifname, kind, mac, delete=delete)


def delete_if_ours(kernel: Kernel, ifname: str, kind: str, mac: str = "",
                   delete: Callable[[Kernel, int, str], bool] | None = None) -> bool:
    """Delete ``ifname`` when it is a ``kind`` link (with ``mac``, if given); never someone else's.
    ``delete(kernel, index, ifname)`` does the delete instead of ``kernel`` (an ``Unlinker``'s: the
    call returns once the link is gone, not once the kernel has cleaned up after it)."""
    link = kernel.link(ifname)
    if link is None:
        return False
    if link.kind != kind or (mac and link.mac != mac.lower()):
        log.warning("not deleting %s %s: it is a %s link with MAC %s, not ours", ifname, kernel.where,
                    link.kind or "plain", link.mac)
        return False
    if delete is not None:
        return delete(kernel, link.index, ifname)
    return kernel.delete_link(link.index, ifname)


class VethDataplane(Dataplane):
    """Plug skeleton of the veth modes; subclasses add the host side and the sandbox plan."""

    def __init__(self, mtu: int, host_netns_fd: int | None, deferred_delete: bool = False) -> None:
        self.mtu = mtu
        self._host = NetnsHandle(host_netns_fd)
        self.deferred_delete = deferred_delete
        self._graveyard = Graveyard(self._host)
        self._unlinker = Unlinker(self._host, HOST)

    def reap_now(self) -> bool:
        """Delete the buried host ends now (agent start, tests); True when there were any."""
        return self._graveyard.reap_now()

    def _reap_peer(self, sandbox_link: LinkInfo) -> bool:
        """Reap when ``sandbox_link`` is the peer of a buried host end; True when it did."""
        if sandbox_link.kind != "veth" or not sandbox_link.link:
            return False
        peer = self.host_kernel().link(index=sandbox_link.link)
        if peer is None or peer.group != GRAVEYARD_GROUP:
            return False
        return self.reap_now()

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
        return Kernel(self._host.socket(), HOST, self._host.discard)

    def plug(self, sandbox_fd: int, att: Attachment) -> Plugged:
        spec = prepare(att, self.mtu, host_end=True, gateway_in_subnet=self._gateway_in_subnet())
        with contextlib.closing(netns_socket(sandbox_fd)) as sock:
            sb = Kernel(sock, SANDBOX)
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
        host = self.host_kernel()
        if self.deferred_delete:
            link = host.link(host_ifname)
            if link is not None and link.kind == "veth":
                self._graveyard.bury(host, link)    # the reaper deletes it with its peer
                return
        elif delete_if_ours(host, host_ifname, "veth", delete=self._unlinker.delete):
            return                      # the peer in the sandbox went with it
        remove_sandbox_link(sandbox_fd, att, plugged, "veth", self._unlinker)

    def check(self, sandbox_fd: int, att: Attachment, plugged: Plugged) -> None:
        with contextlib.closing(netns_socket(sandbox_fd)) as sock:
            sb = Kernel(sock, SANDBOX)
            link, problems = sandbox_problems(sb, plugged, "veth", self._sandbox_addresses(att))
            problems += self._check_more(self.host_kernel(), sb, link, att, plugged)
        raise_if(problems, f"attachment {att.key} differs from what ADD made")

    def host_objects(self) -> set[str]:
        """Host ends named like ``host_ifname_for`` that are no bridge port (routed mode).

        Every routed dataplane of one host netns sees the same set: reconcile against the
        union of all networks' records, not per network.
        """
        return {link.ifname for link in self.host_kernel().links(kind="veth")
                if not link.master and HOST_IFNAME_RE.match(link.ifname)}

    def close(self) -> None:
        self._unlinker.close()
        try:
            self._graveyard.close()
        except CNIError as e:
            log.warning("reaping buried veths at close failed: %s", e)
        self._host.close()
