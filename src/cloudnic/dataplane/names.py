"""Names and MAC addresses the dataplanes derive, and the checks on caller-given ones.

Every derived MAC starts with ``ee``: locally administered (bit 1 set), unicast (bit 0
clear), and distinct from the ``fa:16:3e`` Neutron prefix, so a host-side MAC never
equals a port MAC on the same L2 segment.
"""

from __future__ import annotations

import hashlib
import re

from cloudnic.errors import InvalidConfig

IFNAMSIZ = 15                      # usable characters of a Linux interface name
HOST_IFNAME_RE = re.compile(r"^cn[0-9a-f]{11}$")
_MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


def host_ifname_for(key: str) -> str:
    """The host end name of an attachment: ``"cn"`` + 11 hex chars of sha1(key) (13 chars)."""
    return "cn" + hashlib.sha1(key.encode()).hexdigest()[:11]


def derived_mac(seed: str) -> str:
    """A stable, locally administered unicast MAC derived from ``seed``."""
    digest = hashlib.sha1(seed.encode()).digest()
    return ":".join(f"{b:02x}" for b in (0xEE, *digest[:5]))


def shim_ifname_for(parent: str) -> str:
    """The host-side macvlan shim on ``parent``: ``"cnm-"`` + 11 hex chars (15 chars)."""
    return "cnm-" + hashlib.sha1(parent.encode()).hexdigest()[:11]


def ifname_problem(name: str) -> str | None:
    """Why ``name`` cannot be a Linux interface name, or None when it can."""
    if not name:
        return "is empty"
    if len(name) > IFNAMSIZ:
        return f"is longer than {IFNAMSIZ} characters"
    if name in (".", ".."):
        return "may not be '.' or '..'"
    bad = [c for c in name if c in "/:" or c.isspace() or not c.isprintable()]
    if bad:
        return f"contains the forbidden character {bad[0]!r}"
    return None


def require_ifname(name: str, what: str) -> str:
    problem = ifname_problem(name)
    if problem:
        raise InvalidConfig(f"{what} {name!r} {problem}; use 1-{IFNAMSIZ} characters without '/', ':' "
                            "or whitespace")
    return name


def normalize_mac(mac: str, what: str) -> str:
    """``mac`` as lowercase ``xx:xx:xx:xx:xx:xx``; ``InvalidConfig`` unless unicast and non-zero."""
    norm = mac.strip().lower().replace("-", ":")
    if not _MAC_RE.match(norm):
        raise InvalidConfig(f"{what} {mac!r} is not a MAC address; use the form 02:00:00:00:00:01")
    first = int(norm[:2], 16)
    if first & 1:
        raise InvalidConfig(f"{what} {mac!r} is a multicast MAC; a port needs a unicast MAC")
    if norm == "00:00:00:00:00:00":
        raise InvalidConfig(f"{what} {mac!r} is the zero MAC; a port needs a real MAC")
    return norm
