"""In-memory address allocator of one subnet: round-robin next-free, like host-local.

Addresses are offsets from the subnet's network address. Reserved offsets (network and
broadcast address for IPv4, the subnet-router anycast address for IPv6, the gateway,
the exclusions) are kept as sorted, merged intervals, so the next-free search jumps
over a reserved block in one step; held offsets are a set. With the cursor moving
round-robin the search is O(1) in the common case and bounded by the number of held
addresses in the worst case — never a scan of the whole subnet.
"""

from __future__ import annotations

import bisect
import ipaddress

from cloudnic.providers.base import IPAddress, IPNetwork

from .config import SubnetConfig, parse_exclusion


class SubnetAllocator:
    """Tracks which addresses of one subnet are held. Not thread-safe: the provider locks."""

    def __init__(self, network: str, cfg: SubnetConfig) -> None:
        self.network = network
        self.cfg = cfg
        self.id = cfg.id
        self.cidr: IPNetwork = ipaddress.ip_network(cfg.cidr.strip())
        self.gateway: IPAddress | None = cfg.gateway_ip
        self.size = self.cidr.num_addresses
        self._base = int(self.cidr.network_address)
        reasons: list[tuple[int, int, str]] = []
        if self.cidr.version == 4:
            reasons.append((0, 0, "the network address"))
            reasons.append((self.size - 1, self.size - 1, "the broadcast address"))
        else:
            reasons.append((0, 0, "the subnet-router anycast address"))
        if self.gateway is not None:
            off = int(self.gateway) - self._base
            reasons.append((off, off, "the gateway"))
        for ex in cfg.exclude:
            a, b = parse_exclusion(ex, self.cidr)
            reasons.append((int(a) - self._base, int(b) - self._base, f'excluded (exclude "{ex.strip()}")'))
        self._reasons = reasons
        merged: list[list[int]] = []
        for start, end, _ in sorted(reasons):
            if merged and start <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], end)
            else:
                merged.append([start, end])
        self._starts = [m[0] for m in merged]
        self._ends = [m[1] for m in merged]
        self.usable_total = self.size - sum(e - s + 1 for s, e in merged)
        self.used: set[int] = set()
        self.cursor = -1        # offset of the last address handed out

    # ---- addressing ---------------------------------------------------------------

    @property
    def version(self) -> int:
        return self.cidr.version

    @property
    def label(self) -> str:
        """How messages name the subnet: its CIDR, with its name when it has one."""
        return f'subnet "{self.id}" ({self.cidr})' if self.cfg.name else f"subnet {self.cidr}"

    def offset(self, ip: IPAddress) -> int | None:
        """The offset of ``ip`` in this subnet, or None when it is outside."""
        if ip.version != self.cidr.version or ip not in self.cidr:
            return None
        return int(ip) - self._base

    def address(self, off: int) -> IPAddress:
        if self.version == 4:
            return ipaddress.IPv4Address(self._base + off)
        return ipaddress.IPv6Address(self._base + off)

    def reserved_reason(self, off: int) -> str | None:
        """Why ``off`` may never be handed out (network, broadcast, gateway, excluded), or None."""
        for start, end, why in self._reasons:
            if start <= off <= end:
                return why
        return None

    def _reserved_end(self, off: int) -> int | None:
        i = bisect.bisect_right(self._starts, off) - 1
        if i >= 0 and off <= self._ends[i]:
            return self._ends[i]
        return None

    # ---- state ----------------------------------------------------------------------

    @property
    def free(self) -> int:
        return self.usable_total - len(self.used)

    def take(self, off: int) -> None:
        self.used.add(off)

    def release(self, off: int) -> None:
        self.used.discard(off)

    def load(self, off: int) -> bool:
        """Mark an address found in the store; False when the config no longer allows it."""
        if off < 0 or off >= self.size or self._reserved_end(off) is not None:
            return False
        self.used.add(off)
        return True

    def next_free(self) -> int | None:
        """The next usable, unheld offset after the cursor (wrapping), or None when full."""
        if self.free <= 0:
            return None
        cand = self.cursor + 1
        while True:
            if cand >= self.size:
                cand = 0
            end = self._reserved_end(cand)
            if end is not None:
                cand = end + 1
            elif cand in self.used:
                cand += 1
            else:
                return cand
