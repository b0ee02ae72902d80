"""Node-local warm pools of provider ports (DESIGN.md §3.4).

Per :class:`PoolKey` the manager keeps ports that are bound to this node, parked
(pre-plugged through a :class:`Parker`, so the cloud's agent has made them ACTIVE and
applied their security groups) and recorded ``pooled`` in the store:

* ``acquire(key)`` hands one out with NO provider call (the store row turns ``assigned``
  before it returns); with the key's pool empty it re-keys a port of another key of the
  same network and subnet with ONE ``update_port``; ``None`` is a miss (create on demand).
* ``release(port, key)`` scrubs a port the caller has unplugged from its sandbox and puts
  it back, or deletes it when the pool is full.
* ``refill(key)`` / ``maintain()`` top pools up with ONE bulk ``create_ports`` per refill,
  trim idle ports (with jitter), retry deletions, and back off exponentially when the
  provider fails. They never hold the lock ``acquire`` needs while calling out.
* ``rebuild()`` (in :mod:`cloudnic.pool.rebuild`) reconciles store and provider at start.

Threads: every public method may be called from any thread. The manager's lock guards
memory only; the store, the provider and the parker are never called while holding it,
so a caller may hold the store's lock (be inside ``store.transaction()``) when calling in.

Driving it: either call ``maintain()`` on a timer, or ``start(executor)`` a small thread
that runs ``maintain()`` every ``interval_s`` and as soon as an ``acquire`` drops a pool
below ``min_ready`` (refills run on ``executor`` when given, so that parking runs on the
agent's netns-safe workers); ``stop()`` ends it.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Executor, Future
from dataclasses import replace
from typing import Any, Literal, Protocol

from cloudnic.errors import CNIError, InvalidConfig, NotFound, TryAgainLater
from cloudnic.providers.base import Port, PortSpec, Provider
from cloudnic.store import Store

from . import reclaim
from .backoff import Backoff, BackoffPolicy
from .driver import PoolDriver
from .key import NO_POOL, PoolKey, PoolPolicy
from .rebuild import RebuildReport, rebuild, reconcile
from .records import REFILL_OP, port_fits, record_for
from .state import KeyState, Ready

log = logging.getLogger("cloudnic.pool")

CLUSTER_TAG = "cloudnic:cluster={}"
NODE_TAG = "cloudnic:node={}"

Release = Literal["pooled", "deleted", "deleting"]


class Parker(Protocol):
    """Pre-plugs pooled ports (implemented by the dataplane). Both calls are idempotent and
    raise only :mod:`cloudnic.errors` classes."""

    def park(self, port: Port) -> None: ...

    def unpark(self, port: Port) -> None: ...


class NoParker:
    """For providers whose ports need no host side while pooled (and for tests)."""

    def park(self, port: Port) -> None:
        return None

    def unpark(self, port: Port) -> None:
        return None


def pool_port_name(cluster_id: str, node: str) -> str:
    """The name every pooled port carries (``cloudnic/<cluster>/<node>/...``, the ownership
    fallback of providers without tags)."""
    return f"cloudnic/{cluster_id}/{node}/pool"


class PoolManager:
    def __init__(self, provider: Provider, store: Store, *, node: str, cluster_id: str,
                 spec_for: Callable[[PoolKey], PortSpec], parker: Parker | None,
                 policy_for: Callable[[PoolKey], PoolPolicy | None], clock: Callable[[], float] = time.monotonic,
                 rng: random.Random | None = None, backoff: BackoffPolicy | None = None,
                 provider_name: str | None = None) -> None:
        if not node or not cluster_id:
            raise InvalidConfig("pool manager: node and cluster_id must be set (they tag every pooled port)")
        self.provider = provider
        self.store = store
        self.node = node
        self.cluster_id = cluster_id
        self.spec_for = spec_for
        self.parker: Parker = parker if parker is not None else NoParker()
        self.policy_for = policy_for
        self.clock = clock
        self.rng = rng if rng is not None else random.Random()
        self.backoff_policy = backoff if backoff is not None else BackoffPolicy()
        self.port_name = pool_port_name(cluster_id, node)
        self._provider_name = provider_name
        self._lock = threading.Lock()
        self._keys: dict[PoolKey, KeyState] = {}
        self._sweeping = False                  # a provider-wide reconcile is running: no refill starts
        self.needs_reconcile = False            # an uncertain refill or an unreachable provider at rebuild
        self.delete_backoff = Backoff(self.backoff_policy)   # for deletes, provider-wide
        self.reconcile_backoff = Backoff(self.backoff_policy)
        self._kick = threading.Event()
        self._driver: PoolDriver | None = None

    # ---- helpers shared with rebuild ------------------------------------------------------

    def policy(self, key: PoolKey) -> PoolPolicy:
        try:
            pol = self.policy_for(key)
        except (KeyError, CNIError) as e:
            log.debug("no pool policy for key", extra={"key": key.label, "error": str(e)})
            return NO_POOL
        return NO_POOL if pol is None else pol

    def state(self, key: PoolKey) -> KeyState:
        """The key's state, created on first use. Call with the lock held."""
        st = self._keys.get(key)
        if st is None:
            st = self._keys[key] = KeyState.new(key, self.backoff_policy)
        return st

    @property
    def lock(self) -> threading.Lock:
        return self._lock

    def provider_name(self) -> str:
        """``PortRecord.provider`` of pooled ports: the constructor's ``provider_name`` (pass it:
        the agent knows it), else ``describe().name``, asked once; never raises."""
        if self._provider_name is None:
            try:
                self._provider_name = self.provider.describe().name
            except CNIError as e:
                log.warning("cannot ask the provider its name; recording it as unknown", extra={"error": str(e)})
                return "unknown"
        return self._provider_name

    def ready_entry(self, port: Port, provider: str, policy: PoolPolicy) -> Ready:
        now = self.clock()
        ttl = policy.idle_ttl_s
        expires = now + ttl + self.rng.uniform(0.0, policy.jitter) if ttl > 0 else math.inf
        return Ready(port=port, provider=provider, since=now, expires=expires)

    def learn_sgs(self, st: KeyState, ports: Iterable[Port]) -> None:
        """Remember how the provider spells this key's groups (names become ids). Lock held."""
        if st.sg_ids is None:
            for p in ports:
                if p.security_groups:
                    st.sg_ids = tuple(sorted(p.security_groups))
                    return

    def owner_tags(self) -> tuple[str, str]:
        return CLUSTER_TAG.format(self.cluster_id), NODE_TAG.format(self.node)

    def states(self) -> list[KeyState]:
        """Every key's state. Call with the lock held."""
        return list(self._keys.values())

    def kick(self) -> None:
        """Wake the driver thread (a pool fell below its target)."""
        self._kick.set()

    def wait_kick(self, timeout_s: float) -> None:
        """Sleep until kicked or ``timeout_s`` passed (the driver's pause between rounds)."""
        self._kick.wait(timeout_s)
        self._kick.clear()

    # ---- acquire --------------------------------------------------------------------------

    def acquire(self, key: PoolKey, *, attachment_key: str = "") -> Port | None:
        """A ready port of ``key`` recorded ``assigned`` (no provider call), a re-keyed port of
        the same network and subnet (one ``update_port``), or None on a miss."""
        with self._lock:
            st = self.state(key)
            if st.ready:
                entry = st.ready.popleft()
                st.hits += 1
                donor = None
            else:
                donor = self._donor(st)
                if donor is None:
                    st.misses += 1
                    self._kick.set()
                    return None
                entry = donor.ready.popleft()
            if len(st.ready) < self.policy(key).min_ready:
                self._kick.set()
        if donor is None:
            try:
                self._assign(entry, key, attachment_key)
            except BaseException:
                with self._lock:
                    st.ready.appendleft(entry)
                    st.hits -= 1
                raise
            log.debug("pool hit", extra={"key": key.label, "port": entry.port.id})
            return entry.port
        return self._rekey(entry, donor, st, attachment_key)

    def _donor(self, st: KeyState) -> KeyState | None:
        """The other key of the same network and subnet with the most ready ports. Lock held.

        A key without explicit groups means "the provider's default", which an update
        cannot express, so such a key never receives a re-keyed port."""
        if not st.key.security_groups:
            return None
        best: KeyState | None = None
        for other in self._keys.values():
            if other is st or not other.ready or not other.key.same_place(st.key):
                continue
            if best is None or len(other.ready) > len(best.ready):
                best = other
        return best

    def _rekey(self, entry: Ready, donor: KeyState, st: KeyState, attachment_key: str) -> Port | None:
        key = st.key
        sgs = st.target_sgs()
        try:
            port = self.provider.update_port(entry.port.id, security_groups=sgs)
        except CNIError as e:
            with self._lock:
                st.misses += 1
                st.rekey_errors += 1
                st.last_error = f"re-key of port {entry.port.id} failed: {e}"
                if not isinstance(e, NotFound):
                    donor.ready.appendleft(entry)
            if isinstance(e, NotFound):
                self.store.delete_port(entry.port.id)
            log.warning("re-key failed; counting a miss",
                        extra={"key": key.label, "from": donor.key.label, "port": entry.port.id, "error": str(e)})
            return None
        new = replace(entry, port=port)
        self._assign(new, key, attachment_key)
        with self._lock:
            st.rekeys += 1
            self.learn_sgs(st, [port])
        log.info("re-keyed a pooled port", extra={"key": key.label, "from": donor.key.label, "port": port.id})
        return port

    def _assign(self, entry: Ready, key: PoolKey, attachment_key: str) -> None:
        self.store.put_port(record_for(entry.port, provider=entry.provider, state="assigned",
                                       pool_key=key.encode(), attachment_key=attachment_key))

    # ---- release ------------------------------------------------------------------------------

    def release(self, port: Port, key: PoolKey) -> Release:
        """Take back a port the caller has unplugged from its sandbox: scrub it (name and
        groups, one ``update_port`` only when they differ from the pool's), park it and
        record it ``pooled``; or delete it when the pool is full or the key keeps no pool.

        Provider failures do not raise: a port that cannot be scrubbed is deleted, a delete
        that fails leaves the row ``deleting`` for ``maintain`` to retry."""
        if not port_fits(port, key):
            return self._delete_one(port, key, "the port does not belong to this pool key")
        policy = self.policy(key)
        with self._lock:
            st = self.state(key)
            keep = policy.enabled and st.occupancy < policy.max_idle
            if keep:
                st.returning += 1
            target = st.target_sgs()
        if not keep:
            return self._delete_one(port, key, "pool full" if policy.enabled else "key keeps no pool")
        provider = self.provider_name()
        try:
            port = self._scrub(port, key, target)
            self.parker.park(port)
            self.store.put_port(record_for(port, provider=provider, state="pooled", pool_key=key.encode()))
        except CNIError as e:
            with self._lock:
                st.returning -= 1
                st.last_error = f"release of port {port.id} failed: {e}"
            log.warning("cannot return the port to its pool; deleting it",
                        extra={"key": key.label, "port": port.id, "error": str(e)})
            return self._delete_one(port, key, "scrub failed")
        with self._lock:
            st.returning -= 1
            st.ready.append(self.ready_entry(port, provider, policy))
            self.learn_sgs(st, [port])
        log.debug("port returned to its pool", extra={"key": key.label, "port": port.id})
        return "pooled"

    def _scrub(self, port: Port, key: PoolKey, target: tuple[str, ...]) -> Port:
        name = self.port_name if port.name != self.port_name else None
        sgs = target if key.security_groups and tuple(sorted(port.security_groups)) != target else None
        if name is None and sgs is None:
            return port
        return self.provider.update_port(port.id, name=name, security_groups=sgs)

    # ---- refill ----------------------------------------------------------------------------------

    def refill_spec(self, key: PoolKey) -> PortSpec:
        """``spec_for(key)`` made a pool port: pool name, bound to this node, ownership tags."""
        spec = self.spec_for(key)
        if spec.fixed_ips or spec.mac:
            raise InvalidConfig(f"pool {key.label}: the port spec asks for a fixed IP or MAC; a pooled port "
                                "can have neither (serve static addresses on demand)")
        tags = spec.tags + tuple(t for t in self.owner_tags() if t not in spec.tags)
        return replace(spec, name=self.port_name, host_id=self.node, tags=tags)

    def refill(self, key: PoolKey) -> int:
        """One refill of ``key`` if it is below ``min_ready``: ONE ``create_ports`` of up to
        ``batch``, every new port parked and recorded ``pooled``. Returns how many ports were
        added (0 when none was needed, one is already under way, the key is backing off, or
        the provider failed: the failure is counted and backs the key off)."""
        policy = self.policy(key)
        with self._lock:
            st = self.state(key)
            if st.in_flight or self._sweeping or not st.backoff.ready(self.clock()):
                return 0
            count = policy.refill_count(len(st.ready) + st.returning)
            if count == 0:
                return 0
            st.in_flight = count
        try:
            ports = self._create(key, count)
            parked = self._park_new(ports, key)
        except CNIError as e:
            with self._lock:
                st.in_flight = 0
                st.refill_errors += 1
                st.last_error = f"refill failed: {e}"
                wait = st.backoff.failed(self.clock(), self.rng)
            log.warning("pool refill failed; backing off", extra={
                "key": key.label, "count": count, "retry_in_s": round(wait, 2), "error": str(e)})
            return 0
        except BaseException:
            with self._lock:
                st.in_flight = 0
            raise
        provider = self.provider_name()
        with self._lock:
            st.in_flight = 0
            st.backoff.succeeded()
            st.refills += 1
            st.created += len(ports)
            self.learn_sgs(st, ports)
            st.ready.extend(self.ready_entry(p, provider, policy) for p in parked)
            if len(st.ready) < policy.min_ready:
                self._kick.set()            # a batch smaller than the gap: the driver goes again
        log.info("pool refilled", extra={"key": key.label, "ports_created": len(ports), "parked": len(parked)})
        return len(parked)

    def _create(self, key: PoolKey, count: int) -> list[Port]:
        spec = self.refill_spec(key)
        provider = self.provider_name()
        pool_key = key.encode()
        jid = self.store.journal_begin(REFILL_OP, pool_key, {
            "count": count, "network_id": spec.network_id, "name": spec.name, "node": self.node,
            "cluster_id": self.cluster_id})
        try:
            ports = self.provider.create_ports(spec, count)
        except TryAgainLater:
            # a timeout may have created the ports after all: leave the intent open for reconcile
            self.needs_reconcile = True
            raise
        except CNIError:
            self.store.journal_end(jid)
            raise
        try:
            with self.store.transaction():
                for p in ports:
                    self.store.put_port(record_for(p, provider=provider, state="pooled", pool_key=pool_key))
                self.store.journal_end(jid)
        except BaseException:
            self.needs_reconcile = True     # the ports exist, the store does not know them: adopt later
            raise
        return ports

    def _park_new(self, ports: list[Port], key: PoolKey) -> list[Port]:
        parked: list[Port] = []
        failed: list[Port] = []
        for p in ports:
            try:
                self.parker.park(p)
                parked.append(p)
            except CNIError as e:
                log.warning("cannot park a new pooled port; deleting it", extra={"port": p.id, "error": str(e)})
                failed.append(p)
        self.delete_ports(failed, key.encode())
        return parked

    # ---- recovery ---------------------------------------------------------------------------------

    def rebuild(self, keys: Iterable[PoolKey] = ()) -> RebuildReport:
        """At start, before the agent serves: reload the pools from the store and reconcile
        them with the provider's ports owned by this node. See :mod:`cloudnic.pool.rebuild`."""
        return rebuild(self, keys)

    # ---- reclaiming ------------------------------------------------------------------------------

    def _delete_one(self, port: Port, key: PoolKey, why: str) -> Release:
        done = reclaim.delete_ports(self, [port], key.encode())
        log.info("pooled port deleted" if done else "pooled port delete deferred",
                 extra={"key": key.label, "port": port.id, "why": why})
        return "deleted" if done else "deleting"

    def delete_ports(self, ports: list[Port], pool_key: str) -> bool:
        """Unpark and delete ``ports`` in one provider call (see :mod:`cloudnic.pool.reclaim`)."""
        return reclaim.delete_ports(self, ports, pool_key)

    def retry_deletions(self) -> int:
        return reclaim.retry_deletions(self)

    def trim(self) -> int:
        """Delete idle ports above ``max_idle`` (after a jittered delay) and ports past their
        idle TTL beyond ``min_ready``, oldest first. Returns how many were deleted."""
        return reclaim.trim(self)

    # ---- maintenance ----------------------------------------------------------------------------

    def watch(self, keys: Iterable[PoolKey]) -> None:
        """Register ``keys`` so that ``maintain`` keeps them filled (``prewarm`` and ``rebuild``
        register theirs; a key is also registered by its first ``acquire``/``release``)."""
        with self._lock:
            for key in keys:
                self.state(key)

    def keys(self) -> list[PoolKey]:
        with self._lock:
            return list(self._keys)

    def maintain(self, submit: Callable[..., Future[Any]] | None = None) -> dict[str, int]:
        """One round of upkeep: retry deletions, reconcile after an uncertain refill, trim,
        refill every key below its target. With ``submit`` (an executor's), refills run
        there concurrently, one per key at most; otherwise inline."""
        summary = {"deleted_retry": 0, "trimmed": 0, "refilled": 0, "refills_submitted": 0}
        summary["deleted_retry"] = self.retry_deletions()
        with self._lock:
            due = self.needs_reconcile and self.reconcile_backoff.ready(self.clock())
        if due:
            reconcile(self, startup=False)
        summary["trimmed"] = self.trim()
        for key in self.keys():
            if self.policy(key).refill_count(0) == 0:
                continue
            if submit is None:
                summary["refilled"] += self.refill(key)
            else:
                with self._lock:
                    st = self.state(key)
                    wanted = self.policy(key).refill_count(len(st.ready) + st.returning) > 0 and \
                        not st.in_flight and st.backoff.ready(self.clock())
                if wanted:
                    submit(self.refill, key)
                    summary["refills_submitted"] += 1
        return summary

    def prewarm(self, keys: Iterable[PoolKey]) -> list[dict[str, Any]]:
        """Register ``keys`` and fill each up to ``min_ready`` now (refills one after another
        until the target is met, a refill adds nothing, or the key backs off)."""
        keys = list(keys)
        self.watch(keys)
        for key in keys:
            pol = self.policy(key)
            for _ in range(pol.min_ready // pol.batch + 1):
                if self.refill(key) == 0:
                    break
        return [s for s in self.stats() if s["key"] in {k.label for k in keys}]

    def stats(self) -> list[dict[str, Any]]:
        """Per key: ready vs target, refill state and counters (metrics, ``cloudnic pools``)."""
        now = self.clock()
        out = []
        with self._lock:
            states = list(self._keys.values())
        for st in states:
            pol = self.policy(st.key)
            with self._lock:
                out.append({
                    "key": st.key.label, "network_id": st.key.network_id, "subnet_id": st.key.subnet_id or "",
                    "security_groups": list(st.key.security_groups), "ready": len(st.ready),
                    "target": pol.min_ready, "max_idle": pol.max_idle, "in_flight": st.in_flight,
                    "hits": st.hits, "misses": st.misses, "rekeys": st.rekeys, "rekey_errors": st.rekey_errors,
                    "refills": st.refills, "refill_errors": st.refill_errors, "created": st.created,
                    "deleted": st.deleted, "backoff_s": round(max(0.0, st.backoff.not_before - now), 3),
                    "last_error": st.last_error})
        return out

    # ---- driver ----------------------------------------------------------------------------------

    def start(self, executor: Executor | None = None, *, interval_s: float = 1.0) -> None:
        """Run ``maintain()`` on a daemon thread every ``interval_s`` and whenever an acquire
        leaves a pool below ``min_ready``; refills go to ``executor`` when given."""
        if self._driver is None:
            self._driver = PoolDriver(self, executor, interval_s)
            self._driver.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop the driver and wait (up to ``timeout_s``) for refills under way."""
        driver, self._driver = self._driver, None
        if driver is not None:
            driver.stop(timeout_s)

    def begin_sweep(self) -> bool:
        """Reserve the provider-wide view for a reconcile: False while a refill is under way."""
        with self._lock:
            if self._sweeping or any(st.in_flight for st in self._keys.values()):
                return False
            self._sweeping = True
            return True

    def end_sweep(self) -> None:
        with self._lock:
            self._sweeping = False
