"""What a pool is keyed by and the policy that sizes it.

A :class:`PoolKey` is (provider network id, subnet id or None, sorted security-group
set): two requests with the same key can be served by the same port. Its stored form
(``PortRecord.pool_key``, the ``POOL_REFILL`` journal key) is canonical JSON, so any id
(even one holding ``/`` or ``,``) round-trips; ``label`` is the form for humans.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from cloudnic.errors import InternalError, InvalidConfig


@dataclass(frozen=True)
class PoolKey:
    """A pool: ports of ``network_id`` with an address in ``subnet_id`` (None: the provider's
    choice) and exactly the security groups ``security_groups`` (empty: the provider's default)."""

    network_id: str
    subnet_id: str | None = None
    security_groups: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.network_id:
            raise InvalidConfig("pool key: network_id is empty; every pool belongs to one provider network")
        sgs = tuple(sorted(set(self.security_groups)))
        if sgs != self.security_groups:
            object.__setattr__(self, "security_groups", sgs)
        if self.subnet_id == "":
            object.__setattr__(self, "subnet_id", None)

    def encode(self) -> str:
        """The stored form: canonical JSON ``[network, subnet|null, [sg, ...]]``."""
        return json.dumps([self.network_id, self.subnet_id, list(self.security_groups)], separators=(",", ":"))

    @classmethod
    def decode(cls, text: str) -> PoolKey:
        try:
            net, subnet, sgs = json.loads(text)
            if not isinstance(net, str) or not (subnet is None or isinstance(subnet, str)) or \
                    not all(isinstance(s, str) for s in sgs):
                raise TypeError("wrong element types")
        except (ValueError, TypeError) as exc:
            raise InternalError(f"pool key {text!r} in the state database is not a stored pool key", str(exc)) \
                from None
        return cls(net, subnet, tuple(sgs))

    @property
    def label(self) -> str:
        """``network/subnet[sg,sg]`` (``*`` for any subnet, ``default`` for no explicit group)."""
        sgs = ",".join(self.security_groups) or "default"
        return f"{self.network_id}/{self.subnet_id or '*'}[{sgs}]"

    def same_place(self, other: PoolKey) -> bool:
        """Same network and subnet: a port of ``other`` can serve this key after a re-key."""
        return self.network_id == other.network_id and self.subnet_id == other.subnet_id

    def __str__(self) -> str:
        return self.label


@dataclass(frozen=True)
class PoolPolicy:
    """How big one pool is kept.

    * ``min_ready``: when fewer ports than this are ready, refill;
    * ``batch``: a refill creates ``min(batch, max_idle - ready)`` ports in ONE provider call;
    * ``max_idle``: never more ready ports than this (a release above it deletes the port,
      an excess found by ``maintain`` is trimmed, oldest first);
    * ``idle_ttl_s``: a ready port beyond ``min_ready`` idle this long is deleted (0: never);
    * ``jitter``: seconds; every trim waits a random extra ``[0, jitter]`` after it is due,
      so that the nodes of a cluster do not all delete at the same instant.
    """

    min_ready: int = 0
    max_idle: int = 0
    batch: int = 1
    idle_ttl_s: float = 0.0
    jitter: float = 0.0

    def __post_init__(self) -> None:
        for name in ("min_ready", "max_idle", "batch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InvalidConfig(f"pool.{name} must be a whole number >= 0, not {value!r}")
        if self.batch < 1:
            raise InvalidConfig(f"pool.batch must be at least 1, not {self.batch}")
        if self.max_idle < self.min_ready:
            raise InvalidConfig(f"pool.max_idle ({self.max_idle}) is below pool.min_ready ({self.min_ready}); "
                                "raise max_idle to at least min_ready")
        for name in ("idle_ttl_s", "jitter"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise InvalidConfig(f"pool.{name} must be a number of seconds >= 0, not {value!r}")

    @property
    def enabled(self) -> bool:
        """False for a key that keeps no ports (a released port is deleted)."""
        return self.max_idle > 0

    def refill_count(self, ready: int) -> int:
        """How many ports one refill creates when ``ready`` are ready (0: none needed)."""
        if ready >= self.min_ready:
            return 0
        return max(0, min(self.batch, self.max_idle - ready))


NO_POOL = PoolPolicy()
