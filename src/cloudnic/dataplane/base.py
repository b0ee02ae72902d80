"""The dataplane contract: plug a port into a sandbox, check it, unplug it.

The agent runs these calls on worker threads. ``sandbox_fd`` is an open descriptor
of the sandbox's network namespace (the shim passes it with SCM_RIGHTS); the agent's
own network namespace is "the host". Implementations never shell out.
"""

from __future__ import annotations

import abc
import ipaddress
from dataclasses import dataclass, field

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class RouteSpec:
    dst: str                          # CIDR, "0.0.0.0/0" / "::/0" for default
    gw: str | None = None
    scope_link: bool = False          # on-link route without gateway


@dataclass(frozen=True)
class Attachment:
    """Everything a dataplane needs to plug (and later find again) one attachment."""

    key: str                          # stable id of (network, container id, ifname)
    ifname: str                       # name inside the sandbox
    mac: str                          # the port's MAC, set on the sandbox interface
    mtu: int
    addresses: tuple[IPInterface, ...]  # with the subnet's prefix length
    gateways: tuple[IPAddress, ...] = ()  # one per family at most
    routes: tuple[RouteSpec, ...] = ()    # extra routes (subnet host routes)
    host_ifname: str = ""             # host end name (veth modes); chosen by the agent
    port_id: str = ""
    network_id: str = ""


@dataclass(frozen=True)
class Plugged:
    """What a plug made: recorded in the store and used for DEL/CHECK/the result."""

    host_ifname: str                  # "" for macvlan
    host_mac: str                     # "" for macvlan
    sandbox_ifname: str
    sandbox_mac: str
    mtu: int
    routes: tuple[RouteSpec, ...]     # routes as installed in the sandbox
    gateways: tuple[IPAddress, ...]   # gateway per address (as used in the result)
    extra: dict[str, str] = field(default_factory=dict)


class Dataplane(abc.ABC):
    mode: str = ""

    @abc.abstractmethod
    def plug(self, sandbox_fd: int, att: Attachment) -> Plugged:
        """Create the interface in the sandbox and its host side.

        Atomic: on failure everything this call created is removed again and a
        ``cloudnic.errors`` error is raised (``DataplaneError``/``TryAgainLater``/
        ``InvalidConfig`` when the ifname already exists in the sandbox).
        """

    @abc.abstractmethod
    def unplug(self, sandbox_fd: int | None, att: Attachment, plugged: Plugged | None) -> None:
        """Remove what plug made. Idempotent: gone netns/link/route is success.

        ``sandbox_fd`` is None when the netns is gone; host-side objects are still
        removed. ``plugged`` is None when only the key is known (lost record).
        """

    @abc.abstractmethod
    def check(self, sandbox_fd: int, att: Attachment, plugged: Plugged) -> None:
        """Raise ``CheckFailed`` naming what differs from what plug made."""

    def host_objects(self) -> set[str]:
        """Names of host links this dataplane owns (for reconciliation)."""
        return set()

    def reap_now(self) -> bool:
        """Finish deferred deletes (``deferred_delete``) now; True when something was reaped."""
        return False

    def close(self) -> None:
        """Release netlink sockets."""


class ParkingDataplane(Dataplane):
    """A dataplane that can pre-plug pooled ports ("parking"; see ``dataplane/parking.py``).

    A parked port has its host end in place (so the IaaS agent on the node already sees
    it, binds it and applies its security groups) and its sandbox end waiting, down and
    unaddressed, in a parking netns owned by the agent. ``plug_parked`` moves that end
    into a sandbox: the ADD hot path with a pool hit. Every verb is idempotent.
    """

    @abc.abstractmethod
    def park(self, att: Attachment) -> None:
        """Create the host end and the parked end of ``att.port_id`` (a no-op when parked)."""

    @abc.abstractmethod
    def plug_parked(self, sandbox_fd: int, att: Attachment) -> Plugged:
        """Move the parked end into the sandbox as ``att.ifname`` and configure it (atomic)."""

    @abc.abstractmethod
    def return_to_park(self, sandbox_fd: int | None, att: Attachment, plugged: Plugged | None = None) -> None:
        """Scrub the sandbox end and park it again; re-create it when the sandbox is gone."""

    @abc.abstractmethod
    def unpark(self, att: Attachment) -> None:
        """Delete both ends of a parked port. Refuses a port plugged into a sandbox."""

    @abc.abstractmethod
    def parked_ports(self) -> set[str]:
        """Ids of the ports parked now (what a restarted agent finds)."""
