"""Parking: pooled ports pre-plugged on the node before any sandbox asks for them.

Why. Neutron's L2 agent makes a port ACTIVE and installs its security groups only once
the port's host device (``tap<port_id[:11]>``) exists on the node, which takes seconds.
A pooled port is therefore *parked*: its veth pair exists, the host end is ``tap…``
(up, a port of its bridge), and the other end waits, down and without addresses, in a
**parking network namespace** owned by the agent. An ADD that hits the pool moves that
end into the sandbox and configures it: no IaaS call, no wait for ACTIVE.

The parking netns. A named netns, ``cloudnic-parking`` by default (``/run/netns/
cloudnic-parking``, so ``ip netns exec cloudnic-parking ip link`` shows the parked ends);
a setting with a ``/`` is an absolute path to bind-mount it on instead. It is created on
first use: a throwaway thread ``unshare(CLONE_NEWNET)``\\s, bind-mounts its own netns on
the path and ends, so no thread of the agent ever has to come back from it. Like
``ip netns add``, ``/run/netns`` is made a shared mount first.

Lifetime and restarts. ``close()`` only releases descriptors and sockets: the parking
netns and the parked ends outlive the agent, as the pods do, so a restarted (or upgraded)
agent finds its pool still plugged and ACTIVE rather than making every pooled port flap
DOWN and wait seconds for ACTIVE again. What a restart finds, it enumerates with
``parked_ports()``: each parked end is named ``pk<port_id[:11]>`` and carries the full
port id in its interface alias (``cloudnic-port:<id>``). The alias is set right after the
veth is created (the kernel ignores ``IFLA_IFALIAS`` in a create request); an end a crash
left without one is reported by ``parked_ends()`` with an empty id, ``park()`` of that port
completes it, and ``prune(keep)`` removes it otherwise. ``remove()`` deletes the netns and
with it every parked port (uninstall, tests).

Moves. A parked end enters a sandbox with ONE ``RTM_SETLINK`` sent in the parking netns:
``IFLA_NET_NS_FD`` (the sandbox) + ``IFLA_IFNAME`` (the final name) + MAC + MTU + an
empty alias; the kernel moves the link first, then renames it inside the new netns
(verified on Linux 6.x by the functional tests). Moving back is the same message from the
sandbox side. Leaving a netns flushes the link's addresses, routes and neighbour entries
(``NETDEV_UNREGISTER`` in the old netns) and brings it down, which is the scrub of the
parked end. The tap stays in the host netns with whatever qdiscs a chained plugin put on
it: ``return_to_park`` removes them (``tc.scrub_host_end``).
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from cloudnic.dataplane.base import Attachment, ParkingDataplane
from cloudnic.dataplane.kernel import Kernel, LinkChange, LinkSpec
from cloudnic.dataplane.links import Veth, VethPeer
from cloudnic.dataplane.names import require_ifname
from cloudnic.dataplane.netns import NetnsHandle, is_netns_fd
from cloudnic.errors import DataplaneError, InvalidConfig

log = logging.getLogger(__name__)

DEFAULT_PARKING = "cloudnic-parking"
NETNS_RUN_DIR = "/run/netns"
PARKED_PREFIX = "pk"
ALIAS_PREFIX = "cloudnic-port:"
PARKING = "in the parking netns"
RESOURCE_ID_LENGTH = 11                 # Neutron's: tap<id[:11]>, brq<id[:11]>

CLONE_NEWNET = 0x40000000
MS_BIND = 4096
MS_REC = 16384
MS_SHARED = 1 << 20
MNT_DETACH = 2

_libc = ctypes.CDLL(None, use_errno=True)
_libc.unshare.argtypes = (ctypes.c_int,)
_libc.mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p)
_libc.umount2.argtypes = (ctypes.c_char_p, ctypes.c_int)
_create_lock = threading.Lock()


def parked_name(port_id: str) -> str:
    """The parked end of a port: ``pk`` + the first 11 characters of its id."""
    return PARKED_PREFIX + port_id[:RESOURCE_ID_LENGTH]


def parking_path(setting: str) -> str:
    """``/run/netns/<name>`` for a name, the path itself for an absolute path."""
    if "/" in setting:
        if not os.path.isabs(setting) or ".." in setting.split("/"):
            raise InvalidConfig(f"parking_netns {setting!r} must be a netns name or an absolute path")
        return setting
    if not setting or setting in (".", ".."):
        raise InvalidConfig(f"parking_netns {setting!r} is not a netns name; use e.g. {DEFAULT_PARKING!r}")
    return f"{NETNS_RUN_DIR}/{setting}"


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _share_run_dir(path: str) -> None:
    """Make ``path`` a shared mount, as ``ip netns add`` does for /run/netns."""
    d = path.encode()
    if _libc.mount(b"", d, b"none", MS_SHARED | MS_REC, None) == 0:
        return
    _check(_libc.mount(d, d, b"none", MS_BIND | MS_REC, None), f"bind-mounting {path} on itself")
    _check(_libc.mount(b"", d, b"none", MS_SHARED | MS_REC, None), f"making {path} a shared mount")


def _is_netns_path(path: str) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        return is_netns_fd(fd)
    finally:
        os.close(fd)


def create_netns_file(path: str) -> None:
    """Bind a new, empty network namespace on ``path`` (its directory is created as needed)."""
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o755, exist_ok=True)
    if directory == NETNS_RUN_DIR:
        _share_run_dir(directory)
    os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o444))
    errors: list[OSError] = []

    def work() -> None:   # this thread leaves the agent's netns for good, then ends
        try:
            _check(_libc.unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)")
            _check(_libc.mount(b"/proc/thread-self/ns/net", path.encode(), b"none", MS_BIND, None),
                   f"bind-mounting the new netns on {path}")
        except OSError as e:
            errors.append(e)

    t = threading.Thread(target=work, name="cloudnic-parking-netns", daemon=True)
    t.start()
    t.join()
    if errors:
        raise errors[0]


def remove_netns_file(path: str) -> bool:
    """Unmount and unlink a netns file; the netns dies with its last reference. False if absent."""
    if not os.path.exists(path):
        return False
    if _libc.umount2(path.encode(), MNT_DETACH) != 0 and ctypes.get_errno() != errno.EINVAL:
        err = ctypes.get_errno()
        raise DataplaneError(f"cannot unmount the parking netns {path}", os.strerror(err))
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    return True


@dataclass(frozen=True)
class ParkedEnd:
    index: int
    ifname: str
    port_id: str           # from the alias; "" when a crash left it without one


class ParkingLot:
    """The parking netns: created on first use, shared by every dataplane naming it."""

    def __init__(self, setting: str = DEFAULT_PARKING) -> None:
        self.path = parking_path(setting)
        self._handle: NetnsHandle | None = None
        self._lock = threading.Lock()

    def exists(self) -> bool:
        return self._handle is not None or _is_netns_path(self.path)

    def handle(self) -> NetnsHandle:
        """The open parking netns, created when it does not exist yet."""
        with self._lock:
            if self._handle is not None:
                return self._handle
            with _create_lock:
                try:
                    if not _is_netns_path(self.path):
                        create_netns_file(self.path)
                    fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
                except OSError as e:
                    raise DataplaneError(f"cannot create or open the parking netns {self.path}; the agent "
                                         "must run as root with /run writable", e.strerror or str(e)) from e
            try:
                self._handle = NetnsHandle(fd)
            finally:
                os.close(fd)
            return self._handle

    @property
    def fd(self) -> int:
        return self.handle().fd

    def kernel(self) -> Kernel:
        """This thread's netlink socket in the parking netns."""
        h = self.handle()
        return Kernel(h.socket(), PARKING, h.discard)

    def ends(self) -> dict[str, ParkedEnd]:
        """Every parked end by name (nothing, and no netns created, when there is none)."""
        if not self.exists():
            return {}
        out = {}
        for link in self.kernel().links(kind="veth"):
            if not link.ifname.startswith(PARKED_PREFIX):
                continue
            port_id = link.alias[len(ALIAS_PREFIX):] if link.alias.startswith(ALIAS_PREFIX) else ""
            out[link.ifname] = ParkedEnd(index=link.index, ifname=link.ifname, port_id=port_id)
        return out

    def close(self) -> None:
        """Release the descriptor and sockets; the netns and its parked ends stay."""
        with self._lock:
            handle, self._handle = self._handle, None
        if handle is not None:
            handle.close()

    def remove(self) -> bool:
        """Delete the parking netns and so every parked port (both ends). False when absent."""
        self.close()
        with _create_lock:
            return remove_netns_file(self.path)


# ---- moving ends in and out -----------------------------------------------------------


def set_alias(lot: Kernel, index: int, ifname: str, port_id: str) -> None:
    lot.set_link(index, LinkChange(alias=ALIAS_PREFIX + port_id), f"alias of parked end {ifname}")


def create_parked(host: Kernel, lot: ParkingLot, *, tap: str, port_id: str, mac: str, host_mac: str,
                  mtu: int, master: int) -> None:
    """The veth pair of a parked port: ``tap`` up in the host (in ``master``), its peer parked, down."""
    parked = parked_name(port_id)
    peer = VethPeer(ifname=parked, netns_fd=lot.fd, mac=mac, mtu=mtu, queues=1)
    host.add_link(LinkSpec(ifname=tap, kind=Veth(peer), mac=host_mac, mtu=mtu, up=True, master=master, queues=1),
                  f"veth {tap} (host) <-> {parked} (parked)")
    try:
        lk = lot.kernel()
        end = lk.link(parked)
        if end is None:
            raise DataplaneError(f"parked end {parked} of port {port_id} vanished right after its creation")
        set_alias(lk, end.index, parked, port_id)
    except BaseException:
        tap_link = host.link(tap)
        if tap_link is not None:
            host.delete_link(tap_link.index, tap)
        raise


def move_to_sandbox(lot: Kernel, end_index: int, parked: str, sandbox_fd: int, *, ifname: str, mac: str,
                    mtu: int) -> None:
    """One RTM_SETLINK: into the sandbox, renamed to ``ifname``, the port MAC and MTU, no alias."""
    lot.set_link(end_index, LinkChange(netns_fd=sandbox_fd, ifname=ifname, mac=mac, mtu=mtu, alias=""),
                 f"parked end {parked}: moving it into the sandbox as {ifname}")


def move_to_lot(sb: Kernel, index: int, ifname: str, lot: ParkingLot, *, port_id: str, mac: str,
                mtu: int) -> None:
    """One RTM_SETLINK from the sandbox back to the parking netns (flushes addresses/routes/neighbours)."""
    parked = parked_name(port_id)
    sb.set_link(index, LinkChange(netns_fd=lot.fd, ifname=parked, mac=mac, mtu=mtu),
                f"{ifname}: moving it back to the parking netns as {parked}")
    lk = lot.kernel()
    end = lk.link(parked)
    if end is None:
        raise DataplaneError(f"{parked} is missing from the parking netns right after the move")
    set_alias(lk, end.index, parked, port_id)


def peer_index(kernel: Kernel, index: int) -> int:
    """The ifindex (in the peer's netns) of the other end of the veth ``index``; 0 if unknown."""
    link = kernel.link(index=index)
    return link.link if link is not None else 0


def prune(lot: ParkingLot, keep: Iterable[str]) -> list[str]:
    """Delete parked ends whose port is not in ``keep``; an end without alias matches by prefix."""
    keep = set(keep)
    prefixes = {k[:RESOURCE_ID_LENGTH] for k in keep}
    removed = []
    for name, end in lot.ends().items():
        wanted = end.port_id in keep if end.port_id else name[len(PARKED_PREFIX):] in prefixes
        if not wanted:
            lot.kernel().delete_link(end.index, name)
            removed.append(name)
    return removed


# ---- the pool's view ------------------------------------------------------------------

P = TypeVar("P")


def park_attachment(port_id: str, network_id: str, mac: str, mtu: int = 0) -> Attachment:
    """What parking needs of a port (no sandbox yet): id, network, MAC, MTU."""
    require_ifname(parked_name(port_id), "parked end of port")
    return Attachment(key=f"parked/{port_id}", ifname="eth0", mac=mac, mtu=mtu, addresses=(),
                      port_id=port_id, network_id=network_id)


class PortParker(Generic[P]):
    """The pool's ``Parker``: ``park(port)`` / ``unpark(port)`` on a parking dataplane.

    ``attachment_for`` turns the pool's port value into an ``Attachment`` (usually
    ``lambda p: park_attachment(p.id, p.network_id, p.mac, mtu)``); the dataplane layer
    does not import the providers' types.
    """

    def __init__(self, dataplane: ParkingDataplane, attachment_for: Callable[[P], Attachment]) -> None:
        self.dataplane = dataplane
        self.attachment_for = attachment_for

    def park(self, port: P) -> None:
        self.dataplane.park(self.attachment_for(port))

    def unpark(self, port: P) -> None:
        self.dataplane.unpark(self.attachment_for(port))
