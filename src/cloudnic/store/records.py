"""Rows of the agent's view as frozen values. JSON columns are plain dicts here."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cloudnic.errors import InternalError

ATTACHMENT_STATES = frozenset({"creating", "assigned", "releasing"})
PORT_STATES = frozenset({"creating", "pooled", "assigned", "releasing", "deleting"})


def attachment_key(network: str, container_id: str, ifname: str) -> str:
    """The attachment key of DESIGN.md §3.1: (network name, container id, ifname)."""
    return f"{network}/{container_id}/{ifname}"


@dataclass(frozen=True)
class AttachmentRecord:
    """One sandbox interface made by ADD. ``result`` is the stored CNI result."""

    key: str
    network: str
    container_id: str
    ifname: str
    netns: str
    state: str
    port_id: str
    mode: str
    host_ifname: str
    result: dict[str, Any]
    cni_version: str
    pod_namespace: str = ""
    pod_name: str = ""
    pod_uid: str = ""
    plugged: dict[str, Any] = field(default_factory=dict)
    created_at: float = 0.0
    updated_at: float = 0.0

    def __post_init__(self) -> None:
        if self.state not in ATTACHMENT_STATES:
            raise InternalError(
                f"attachment {self.key!r}: state {self.state!r} is not one of {sorted(ATTACHMENT_STATES)}"
            )


@dataclass(frozen=True)
class PortRecord:
    """The agent's view of one provider port. ``fixed_ips`` holds (subnet_id, address) pairs."""

    port_id: str
    provider: str
    network_id: str
    state: str
    mac: str
    fixed_ips: tuple[tuple[str, str], ...]
    pool_key: str = ""
    attachment_key: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    created_at: float = 0.0
    updated_at: float = 0.0

    def __post_init__(self) -> None:
        if self.state not in PORT_STATES:
            raise InternalError(
                f"port {self.port_id!r}: state {self.state!r} is not one of {sorted(PORT_STATES)}"
            )


@dataclass(frozen=True)
class JournalEntry:
    """An intent written before any side effect; ended once the operation is done or undone."""

    id: int
    op: str
    key: str
    data: dict[str, Any]
    created_at: float
    updated_at: float
