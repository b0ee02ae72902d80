"""A thin, typed view of one rtnetlink socket, translating kernel errors at the boundary.

Every call names the object it touches and where ("in the sandbox", "in the host
netns"), so an error reads like ``adding address 10.0.0.5/24 to eth0 in the sandbox:
already exists``; the kernel's own explanation (extended ack), when it gives one, goes
into the details. Deletes treat "already gone" as success and say so by returning False.
``batch`` sends several requests in one datagram; a failure names the request that failed.
"""

from __future__ import annotations

import contextlib
import errno
import logging
from collections.abc import Callable, Iterator, Sequence

from cloudnic.dataplane import links, rtmsg
from cloudnic.dataplane.base import IPAddress, IPInterface
from cloudnic.dataplane.links import LinkChange, LinkInfo, LinkSpec
from cloudnic.dataplane.nlattr import NLM_F_ECHO, NUD_PERMANENT, RT_TABLE_MAIN
from cloudnic.dataplane.rtmsg import IPNetwork, Route
from cloudnic.dataplane.rtnl import KernelError, Request, RtnlSocket
from cloudnic.errors import CNIError, InternalError, from_errno, is_gone

log = logging.getLogger(__name__)

__all__ = ["IPNetwork", "Kernel", "LinkChange", "LinkInfo", "LinkSpec", "Request", "Route", "cause_errno"]


def cause_errno(exc: BaseException) -> int | None:
    """The errno behind a translated kernel error (its ``__cause__``), if any."""
    code = getattr(exc.__cause__, "errno", None)
    return code if isinstance(code, int) else None


def _gone(e: CNIError) -> bool:
    return is_gone(e.__cause__ or e)


class Kernel:
    """Rtnetlink operations on one socket. ``where`` names its netns in messages."""

    def __init__(self, sock: RtnlSocket, where: str, on_socket_error: Callable[[], None] | None = None) -> None:
        self.sock = sock
        self.where = where
        self._on_socket_error = on_socket_error

    @contextlib.contextmanager
    def call(self, what: str, hint: str = "") -> Iterator[None]:
        """Translate whatever the kernel or the socket raises into a cloudnic error about ``what``."""
        try:
            yield
        except CNIError:
            raise
        except KernelError as e:
            err = from_errno(e.code, f"{e.what or what} {self.where}", hint)
            if e.kernel_says:
                err.details = f"{err.details}; the kernel says: {e.kernel_says}"
            raise err from e
        except OSError as e:
            if self._on_socket_error is not None:
                self._on_socket_error()
            raise from_errno(e.errno or 0, f"{what} {self.where} (netlink socket error)", hint) from e
        except Exception as e:
            raise InternalError(f"{what} {self.where}: unexpected {type(e).__name__}", str(e)) from e

    def batch(self, reqs: Sequence[Request], what: str, hint: str = "") -> None:
        """Send ``reqs`` in one datagram; the first failure is raised naming its request."""
        with self.call(what, hint):
            self.sock.batch(reqs)

    # ---- links ------------------------------------------------------------------------

    def link(self, ifname: str = "", index: int = 0) -> LinkInfo | None:
        """The link named ``ifname`` (or with ``index``); None when there is none."""
        try:
            with self.call(f"looking up link {ifname or index}"):
                replies = self.sock.request(links.getlink(ifname, index))
        except CNIError as e:
            if _gone(e):
                return None
            raise
        return links.decode_link(replies[0]) if replies else None

    def links(self, master: int = 0, kind: str = "") -> list[LinkInfo]:
        """Every link (the kernel filters by ``master`` and ``kind`` when given)."""
        with self.call("listing links"):
            msgs = self.sock.dump(links.dumplinks(master, kind))
        out = [links.decode_link(payload) for _, payload in msgs]
        return [lk for lk in out if (not master or lk.master == master) and (not kind or lk.kind == kind)]

    def add_link(self, spec: LinkSpec, what: str, hint: str = "", *, echo: bool = False) -> LinkInfo | None:
        """Create a link. With ``echo`` the kernel sends the new link back (NLM_F_ECHO, Linux
        >= 6.2; None from older kernels): a veth's host end names its peer's ifindex there."""
        req = links.newlink(spec)
        if echo:
            req = Request(req.type, req.flags | NLM_F_ECHO, req.body, req.what)
        with self.call(f"creating {what}", hint):
            replies = self.sock.request(req)
        for payload in replies:
            info = links.decode_link(payload)
            if info.ifname == spec.ifname:
                return info
        return None

    def set_link(self, index: int, change: LinkChange, what: str) -> None:
        with self.call(f"changing {what}"):
            self.sock.request(links.setlink(index, change))

    def set_up(self, index: int, ifname: str) -> None:
        self.set_link(index, LinkChange(up=True), f"link {ifname} to up")

    def delete_link(self, index: int, ifname: str) -> bool:
        """Delete a link; False when it was already gone."""
        try:
            with self.call(f"deleting link {ifname}"):
                self.sock.request(links.dellink(index))
        except CNIError as e:
            if _gone(e):
                return False
            raise
        return True

    def delete_group(self, group: int) -> bool:
        """Delete every link of ``group`` in one request; False when there was none."""
        try:
            with self.call(f"deleting the links of group {group}"):
                self.sock.request(links.dellink(group=group))
        except CNIError as e:
            if _gone(e):
                return False
            raise
        return True

    # ---- addresses --------------------------------------------------------------------

    def add_address(self, index: int, iface: IPInterface, ifname: str, exist_ok: bool = False) -> bool:
        """Add ``iface`` (IPv6 without DAD); False when ``exist_ok`` and it was already there."""
        try:
            with self.call(f"adding address {iface.with_prefixlen} to {ifname}"):
                self.sock.request(rtmsg.newaddr(index, iface))
        except CNIError as e:
            if exist_ok and cause_errno(e) == errno.EEXIST:
                return False
            raise
        return True

    def delete_address(self, index: int, iface: IPInterface, ifname: str) -> bool:
        try:
            with self.call(f"removing address {iface.with_prefixlen} from {ifname}"):
                self.sock.request(rtmsg.deladdr(index, iface))
        except CNIError as e:
            if _gone(e) or cause_errno(e) == errno.EADDRNOTAVAIL:
                return False
            raise
        return True

    def addresses(self, index: int) -> set[IPInterface]:
        """The addresses on ``index`` (a dump the kernel filters by ifindex); empty when it is gone."""
        try:
            with self.call("listing addresses"):
                msgs = self.sock.dump(rtmsg.dumpaddrs(index))
        except CNIError as e:
            if _gone(e):
                return set()
            raise
        out: set[IPInterface] = set()
        for _, payload in msgs:
            found = rtmsg.decode_addr(payload)
            if found is not None and found[0] == index:
                out.add(found[1])
        return out

    # ---- routes and neighbours --------------------------------------------------------

    def add_route(self, index: int, ifname: str, dst: IPNetwork, gw: IPAddress | None = None,
                  scope_link: bool = False) -> None:
        via = f" via {gw}" if gw is not None else ""
        with self.call(f"adding route {dst.with_prefixlen}{via} dev {ifname}"):
            self.sock.request(rtmsg.newroute(index, dst, gw, scope_link))

    def routes(self, index: int) -> set[Route]:
        """(dst, gateway) of the main-table routes leaving through ``index`` (filtered by the kernel)."""
        try:
            with self.call("listing routes"):
                msgs = self.sock.dump(rtmsg.dumproutes(index))
        except CNIError as e:
            if _gone(e):
                return set()
            raise
        out: set[Route] = set()
        for _, payload in msgs:
            r = rtmsg.decode_route(payload)
            if r is not None and r[0] == RT_TABLE_MAIN and r[1] == index:
                out.add(r[2])
        return out

    def add_neigh(self, index: int, ifname: str, ip: IPAddress, mac: str) -> None:
        with self.call(f"adding permanent neighbour {ip} -> {mac} on {ifname}"):
            self.sock.request(rtmsg.newneigh(index, ip, mac))

    def neigh(self, index: int, ip: IPAddress) -> tuple[str, bool] | None:
        """(lladdr, permanent) of the neighbour entry for ``ip`` on ``index``, None if absent."""
        try:
            with self.call(f"looking up neighbour {ip}"):
                replies = self.sock.request(rtmsg.getneigh(index, ip))
        except CNIError as e:
            if _gone(e):
                return None
            raise
        for payload in replies:
            ifindex, lladdr, state = rtmsg.decode_neigh(payload)
            if ifindex == index:
                return lladdr.lower(), bool(state & NUD_PERMANENT)
        return None
