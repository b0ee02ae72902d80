"""The in-memory side of the pools: per key, the ready ports (oldest first) and counters.

Plain mutable objects, guarded by the manager's lock; the store holds the durable copy
(one ``pooled`` row per ready port).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from cloudnic.providers.base import Port

from .backoff import Backoff, BackoffPolicy
from .key import PoolKey


@dataclass
class Ready:
    """A pooled port: ``since`` is when it entered the pool, ``expires`` when its idle TTL
    (jitter included) runs out (``inf`` when the key has no TTL)."""

    port: Port
    provider: str
    since: float
    expires: float


@dataclass
class KeyState:
    key: PoolKey
    backoff: Backoff
    ready: deque[Ready] = field(default_factory=deque)
    in_flight: int = 0          # ports the refill under way is creating (0: no refill under way)
    returning: int = 0          # releases under way that will add a port
    trim_due: float | None = None   # when the excess above max_idle may be trimmed (jittered)
    sg_ids: tuple[str, ...] | None = None   # the groups the provider reports on this key's ports
    hits: int = 0
    misses: int = 0
    rekeys: int = 0
    rekey_errors: int = 0
    refills: int = 0
    refill_errors: int = 0
    created: int = 0
    deleted: int = 0
    last_error: str = ""

    @classmethod
    def new(cls, key: PoolKey, backoff: BackoffPolicy) -> KeyState:
        return cls(key=key, backoff=Backoff(backoff))

    @property
    def occupancy(self) -> int:
        """Ports that are, or are about to be, ready: what ``max_idle`` bounds."""
        return len(self.ready) + self.in_flight + self.returning

    def ids(self) -> set[str]:
        return {r.port.id for r in self.ready}

    def take(self, port_id: str) -> Ready | None:
        """Remove the ready port ``port_id`` (None when it is not ready here)."""
        for r in self.ready:
            if r.port.id == port_id:
                self.ready.remove(r)
                return r
        return None

    def target_sgs(self) -> tuple[str, ...]:
        """The groups this key's ports carry, as the provider spells them (ids), when known."""
        return self.sg_ids if self.sg_ids is not None else self.key.security_groups
