"""cloudnic.pool: node-local warm pools of provider ports (DESIGN.md §3.4).

See :mod:`cloudnic.pool.manager` for the model and the threading rules, and
:mod:`cloudnic.pool.rebuild` for recovery after a restart.
"""

from .backoff import Backoff, BackoffPolicy
from .key import NO_POOL, PoolKey, PoolPolicy
from .manager import NoParker, Parker, PoolManager, pool_port_name
from .rebuild import RebuildReport
from .records import REFILL_OP, port_data, port_fits, port_from_record, record_for

__all__ = [
    "NO_POOL",
    "REFILL_OP",
    "Backoff",
    "BackoffPolicy",
    "NoParker",
    "Parker",
    "PoolKey",
    "PoolManager",
    "PoolPolicy",
    "RebuildReport",
    "pool_port_name",
    "port_data",
    "port_fits",
    "port_from_record",
    "record_for",
]
