"""Giving pooled ports back to the provider: deletion, its retries, and trimming.

A delete first unparks the ports and marks their rows ``deleting``, then makes ONE
``delete_ports`` call, then drops the rows. When the provider fails, the rows stay
``deleting`` and ``retry_deletions`` (run by ``maintain``, with backoff) finishes them, so
a release or a trim never fails because the provider is down.

Trimming (``trim``) takes, per key, the excess above ``max_idle`` once a jittered delay
``U[0, jitter]`` after it was first seen has passed, and the ports beyond ``min_ready``
whose idle TTL (itself jittered when the port entered the pool) has run out; oldest first.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from cloudnic.errors import CNIError
from cloudnic.providers.base import Port

from .key import PoolKey, PoolPolicy
from .records import record_for
from .state import KeyState, Ready

if TYPE_CHECKING:
    from .manager import PoolManager

log = logging.getLogger("cloudnic.pool")


def delete_ports(mgr: PoolManager, ports: list[Port], pool_key: str) -> bool:
    """Unpark, mark ``deleting``, delete at the provider in ONE call, drop the rows.
    False when the provider failed (the rows stay ``deleting`` for a retry)."""
    if not ports:
        return True
    for p in ports:
        try:
            mgr.parker.unpark(p)
        except CNIError as e:
            log.warning("unpark failed; deleting the port anyway", extra={"port": p.id, "error": str(e)})
    provider = mgr.provider_name()
    with mgr.store.transaction():
        for p in ports:
            row = mgr.store.get_port(p.id)
            mgr.store.put_port(replace(row, state="deleting") if row is not None else
                               record_for(p, provider=provider, state="deleting", pool_key=pool_key))
    try:
        mgr.provider.delete_ports([p.id for p in ports])
    except CNIError as e:
        with mgr.lock:
            mgr.delete_backoff.failed(mgr.clock(), mgr.rng)
        log.warning("deleting pooled ports failed; will retry", extra={
            "ports": [p.id for p in ports], "error": str(e)})
        return False
    with mgr.store.transaction():
        for p in ports:
            mgr.store.delete_port(p.id)
    _count(mgr, pool_key, len(ports))
    return True


def _count(mgr: PoolManager, pool_key: str, n: int) -> None:
    if pool_key:
        key = PoolKey.decode(pool_key)
        with mgr.lock:
            mgr.state(key).deleted += n


def retry_deletions(mgr: PoolManager) -> int:
    """Delete, in one call, the ports whose rows a failed delete left ``deleting``."""
    with mgr.lock:
        if not mgr.delete_backoff.ready(mgr.clock()):
            return 0
    rows = [r for r in mgr.store.list_ports(state="deleting") if r.pool_key]
    if not rows:
        return 0
    try:
        mgr.provider.delete_ports([r.port_id for r in rows])
    except CNIError as e:
        with mgr.lock:
            mgr.delete_backoff.failed(mgr.clock(), mgr.rng)
        log.warning("retrying deletions failed", extra={"ports": len(rows), "error": str(e)})
        return 0
    with mgr.lock:
        mgr.delete_backoff.succeeded()
    with mgr.store.transaction():
        for r in rows:
            mgr.store.delete_port(r.port_id)
    for r in rows:
        _count(mgr, r.pool_key, 1)
    log.info("finished deferred deletions of pooled ports", extra={"ports": [r.port_id for r in rows]})
    return len(rows)


def trim(mgr: PoolManager) -> int:
    """Delete what ``due`` says, one provider call per key. Returns how many were deleted."""
    now = mgr.clock()
    victims: dict[PoolKey, list[Ready]] = {}
    with mgr.lock:
        for st in mgr.states():
            out = due(st, mgr.policy(st.key), now, mgr.rng.uniform)
            if out:
                victims[st.key] = out
    done = 0
    for key, out in victims.items():
        if delete_ports(mgr, [r.port for r in out], key.encode()):
            done += len(out)
        log.info("trimmed idle pooled ports", extra={"key": key.label, "ports": [r.port.id for r in out]})
    return done


def due(st: KeyState, policy: PoolPolicy, now: float, uniform: Callable[[float, float], float]) -> list[Ready]:
    """Take out of ``st`` the ready ports a trim deletes now. Call with the manager's lock held."""
    out: list[Ready] = []
    excess = len(st.ready) - policy.max_idle
    if excess > 0:
        if st.trim_due is None:
            st.trim_due = now + uniform(0.0, policy.jitter)
        if now >= st.trim_due:
            out = [st.ready.popleft() for _ in range(excess)]
            st.trim_due = None
    else:
        st.trim_due = None
    spare = len(st.ready) - policy.min_ready
    if spare > 0 and policy.idle_ttl_s > 0:
        old = [r for r in st.ready if r.expires <= now][:spare]
        for r in old:
            st.ready.remove(r)
        out.extend(old)
    return out
