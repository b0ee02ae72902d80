"""Macvlan mode: a macvlan child of a parent NIC, created directly inside the sandbox.

One RTM_NEWLINK creates the child on ``parent`` (looked up in the host netns) with
``IFLA_NET_NS_FD`` = the sandbox, its final ifname, the port MAC and the MTU; then the
sandbox side gets addresses with the subnet prefix, default route(s) via the subnet
gateway(s) and the extra routes, as in bridge mode.

The host shim. A macvlan parent can never talk to its own children, so the node could
not reach its pods. With ``host_shim`` (default) a host-side macvlan ``cnm-<hash>`` on
the same parent, in bridge mode, carries each subnet gateway with the subnet prefix:
the node reaches the pods on-link and the pods reach their gateway (the node). It is
created after the sandbox side succeeded, on first use, and shared by every attachment
of the parent; unplug leaves it (``remove_shim()`` is for teardown). When the real
subnet gateway lives on the wire (an IaaS router), set ``host_shim=False`` or the node
would answer for the router's address. The shim only reaches children in ``bridge``
mode; other modes need a hairpinning switch.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import threading

from cloudnic import crash
from cloudnic.dataplane.base import Attachment, Dataplane, IPInterface, Plugged
from cloudnic.dataplane.bridge import gateway_interfaces
from cloudnic.dataplane.check import address_problems, link_problems, raise_if, sandbox_problems
from cloudnic.dataplane.kernel import Kernel, LinkInfo, LinkSpec, cause_errno
from cloudnic.dataplane.links import Macvlan
from cloudnic.dataplane.names import derived_mac, require_ifname, shim_ifname_for
from cloudnic.dataplane.netns import NetnsHandle, netns_socket
from cloudnic.dataplane.spec import PlugSpec, prepare, subnet_routes
from cloudnic.dataplane.undo import Undo
from cloudnic.dataplane.unlink import Unlinker
from cloudnic.dataplane.veth import (
    HOST,
    SANDBOX,
    configure_sandbox,
    delete_if_ours,
    remove_sandbox_link,
    require_free_ifname,
)
from cloudnic.errors import CNIError, DataplaneError, InvalidConfig

MACVLAN_MODES = ("bridge", "private", "vepa", "passthru")


class MacvlanDataplane(Dataplane):
    mode = "macvlan"

    def __init__(self, parent: str, mtu: int = 1500, host_netns_fd: int | None = None,
                 macvlan_mode: str = "bridge", host_shim: bool = True) -> None:
        self.parent = require_ifname(parent, "macvlan parent")
        if macvlan_mode not in MACVLAN_MODES:
            raise InvalidConfig(f"macvlan mode {macvlan_mode!r} is not supported; use one of "
                                f"{', '.join(MACVLAN_MODES)}")
        self.macvlan_mode = macvlan_mode
        self.mtu = mtu
        self.host_shim = host_shim
        self.shim = shim_ifname_for(parent)
        self.shim_mac = derived_mac("shim:" + parent)
        self._lock = threading.Lock()
        self._host = NetnsHandle(host_netns_fd)
        self._unlinker = Unlinker(self._host, HOST)      # DEL deletes the child in the sandbox through it

    def host_kernel(self) -> Kernel:
        return Kernel(self._host.socket(), HOST, self._host.discard)

    def _parent(self, host: Kernel) -> LinkInfo:
        link = host.link(self.parent)
        if link is None:
            raise InvalidConfig(f"macvlan parent {self.parent!r} does not exist in the host netns; set the "
                                "network's parent to an existing interface")
        return link

    # ---- plug -------------------------------------------------------------------------

    def plug(self, sandbox_fd: int, att: Attachment) -> Plugged:
        spec = prepare(att, self.mtu, host_end=False, gateway_in_subnet=True)
        host = self.host_kernel()
        parent = self._parent(host)
        with contextlib.closing(netns_socket(sandbox_fd)) as sock:
            sb = Kernel(sock, SANDBOX)
            undo = Undo()
            try:
                return self._plug(host, sb, sandbox_fd, parent=parent, spec=spec, undo=undo)
            except BaseException as e:
                undo.run()
                if isinstance(e, CNIError | KeyboardInterrupt | SystemExit):
                    raise
                raise DataplaneError(f"plugging {spec.ifname} failed unexpectedly: {type(e).__name__}",
                                     str(e)) from e

    def _plug(self, host: Kernel, sb: Kernel, sandbox_fd: int, *, parent: LinkInfo, spec: PlugSpec,
              undo: Undo) -> Plugged:
        try:
            host.add_link(LinkSpec(ifname=spec.ifname, kind=Macvlan(self.macvlan_mode), mac=spec.mac,
                                   mtu=spec.mtu, parent=parent.index, netns_fd=sandbox_fd),
                          f"macvlan {spec.ifname} on {self.parent} (into the sandbox)",
                          hint=f"the MTU must not exceed {self.parent}'s ({parent.mtu})")
        except DataplaneError as e:
            if cause_errno(e) == errno.EEXIST:
                require_free_ifname(sb, spec.ifname)
            raise
        undo.add(f"delete {spec.ifname}", lambda: delete_if_ours(sb, spec.ifname, "macvlan", spec.mac))
        crash.point("plug:veth-created")          # the pod's link (here the macvlan child) exists
        routes = subnet_routes(spec)
        configure_sandbox(sb, spec, spec.addresses, routes)
        crash.point("plug:sandbox-configured")
        gateways = tuple(spec.gateways[v] for v in spec.families if v in spec.gateways)
        if self.host_shim:
            self._ensure_shim(host, parent, gateway_interfaces(spec.addresses, gateways), undo)
        return Plugged(host_ifname="", host_mac="", sandbox_ifname=spec.ifname, sandbox_mac=spec.mac,
                       mtu=spec.mtu, routes=routes, gateways=gateways,
                       extra={"parent": self.parent, "shim": self.shim if self.host_shim else ""})

    def _ensure_shim(self, host: Kernel, parent: LinkInfo, gateways: tuple[IPInterface, ...],
                     undo: Undo) -> None:
        with self._lock:
            link = host.link(self.shim)
            if link is None:
                try:
                    host.add_link(LinkSpec(ifname=self.shim, kind=Macvlan("bridge"), mac=self.shim_mac,
                                           mtu=parent.mtu, up=True, parent=parent.index),
                                  f"host shim {self.shim} on {self.parent}")
                    undo.add(f"delete shim {self.shim}", self.remove_shim)
                except DataplaneError as e:
                    if cause_errno(e) != errno.EEXIST:
                        raise
                link = host.link(self.shim)
                if link is None:
                    raise DataplaneError(f"host shim {self.shim} vanished from the host netns; retry")
            if link.kind != "macvlan":
                raise InvalidConfig(f"{self.shim} exists in the host netns but is not a macvlan; remove it")
            if not link.up:
                host.set_up(link.index, self.shim)
            for iface in gateways:
                if host.add_address(link.index, iface, self.shim, exist_ok=True):
                    undo.add(f"remove {iface} from {self.shim}",
                             functools.partial(host.delete_address, link.index, iface, self.shim))

    def remove_shim(self) -> bool:
        """Delete the host shim (teardown); True when it was deleted."""
        host = self.host_kernel()
        with self._lock:
            link = host.link(self.shim)
            return link is not None and link.kind == "macvlan" and host.delete_link(link.index, self.shim)

    # ---- unplug / check ---------------------------------------------------------------

    def unplug(self, sandbox_fd: int | None, att: Attachment, plugged: Plugged | None) -> None:
        """Delete the child in the sandbox; with the netns gone it is gone too (nothing on the host)."""
        remove_sandbox_link(sandbox_fd, att, plugged, "macvlan", self._unlinker)

    def check(self, sandbox_fd: int, att: Attachment, plugged: Plugged) -> None:
        with contextlib.closing(netns_socket(sandbox_fd)) as sock:
            _, problems = sandbox_problems(Kernel(sock, SANDBOX), plugged, "macvlan", att.addresses)
        host = self.host_kernel()
        problems += link_problems(host, self.parent, HOST)[1]
        if self.host_shim:
            shim, more = link_problems(host, self.shim, HOST, kind="macvlan")
            problems += more
            if shim is not None:
                problems += address_problems(host, shim, HOST,
                                             gateway_interfaces(tuple(att.addresses), plugged.gateways))
        raise_if(problems, f"attachment {att.key} differs from what ADD made")

    def host_objects(self) -> set[str]:
        """None: the children live in the sandboxes; the shim is shared, not an attachment's."""
        return set()

    def close(self) -> None:
        self._unlinker.close()
        self._host.close()
