"""Pool ports in the store: a ``PortRecord`` carries enough of the ``Port`` in its ``data``
(name, security groups, tags, owner, host, status) to hand it out again after a restart
with no provider call."""

from __future__ import annotations

import ipaddress
from typing import Any

from cloudnic.providers.base import FixedIP, Port
from cloudnic.store import PortRecord

from .key import PoolKey

REFILL_OP = "POOL_REFILL"     # journal op of a bulk create for a pool (key: the encoded pool key)


def port_data(port: Port) -> dict[str, Any]:
    """The ``PortRecord.data`` that lets :func:`port_from_record` rebuild ``port``."""
    return {"name": port.name, "status": port.status, "security_groups": list(port.security_groups),
            "tags": list(port.tags), "device_owner": port.device_owner, "host_id": port.host_id}


def record_for(port: Port, *, provider: str, state: str, pool_key: str = "", attachment_key: str = "",
               created_at: float = 0.0) -> PortRecord:
    return PortRecord(
        port_id=port.id, provider=provider, network_id=port.network_id, state=state, mac=port.mac,
        fixed_ips=tuple((f.subnet_id, str(f.address)) for f in port.fixed_ips), pool_key=pool_key,
        attachment_key=attachment_key, data=port_data(port), created_at=created_at,
    )


def port_from_record(rec: PortRecord) -> Port:
    """The ``Port`` a store row describes (fields missing from ``data`` stay empty)."""
    d = rec.data
    return Port(
        id=rec.port_id, network_id=rec.network_id, mac=rec.mac,
        fixed_ips=tuple(FixedIP(subnet_id=s, address=ipaddress.ip_address(a)) for s, a in rec.fixed_ips),
        name=str(d.get("name", "")), status=str(d.get("status", "")),
        security_groups=tuple(str(x) for x in d.get("security_groups", ())),
        tags=tuple(str(x) for x in d.get("tags", ())), device_owner=str(d.get("device_owner", "")),
        host_id=str(d.get("host_id", "")),
    )


def port_fits(port: Port, key: PoolKey) -> bool:
    """The port is on the key's network and (when the key names one) has an address in its subnet."""
    if port.network_id != key.network_id:
        return False
    return key.subnet_id is None or any(f.subnet_id == key.subnet_id for f in port.fixed_ips)
