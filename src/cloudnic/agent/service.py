"""The CNI verbs: ADD, DEL, CHECK, GC, STATUS (DESIGN.md §3.1 and §3.2).

Every verb runs under the lock of its attachment key; blocking work (store, provider,
netlink) runs on the agent's worker threads. ADD journals its intent before any side
effect and keeps a list of undo steps that run in reverse when a later step fails.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, TypeVar

from cloudnic import crash
from cloudnic.agent import convert
from cloudnic.agent.config import AgentConfig, NetworkSettings
from cloudnic.agent.locks import Gate, KeyedLocks
from cloudnic.agent.runtime import Runtime
from cloudnic.cni import version as cniversion
from cloudnic.cni.config import NetConf
from cloudnic.cni.env import Env
from cloudnic.cni.hints import Hints
from cloudnic.cni.result import Result, parse_result
from cloudnic.dataplane import host_ifname_for
from cloudnic.dataplane.base import Attachment, ParkingDataplane, Plugged
from cloudnic.errors import (
    AddressUnavailable,
    CheckFailed,
    CNIError,
    IncompatibleVersion,
    InvalidEnvironment,
    NotAvailable,
    NotFound,
    TryAgainLater,
    UnknownContainer,
)
from cloudnic.ipam.resolve import Defaults, Request, build_port_spec, choose_network, find_subnet
from cloudnic.pool import PoolKey, port_data, port_from_record
from cloudnic.providers.base import Port
from cloudnic.store import AttachmentRecord, PortRecord

log = logging.getLogger("cloudnic.agent")
T = TypeVar("T")


def attachment_key(network: str, container_id: str, ifname: str) -> str:
    return f"{network}/{container_id}/{ifname}"


@dataclass(frozen=True)
class Call:
    """One parsed CNI invocation."""

    env: Env
    conf: NetConf
    netns_fd: int | None
    netns_errno: int | None


class Service:
    def __init__(self, cfg: AgentConfig, rt: Runtime) -> None:
        self.cfg = cfg
        self.rt = rt
        self.locks = KeyedLocks()
        self.gate = Gate()        # CNI verbs shared; audit repairs exclusive
        self.ready = False
        self.recheck_at = 0.0     # wall time of the post-recovery reconcile still due (0: none)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.rt.executor, fn, *args)

    # ---- ADD --------------------------------------------------------------------------

    def add(self, call: Call, hints: Hints) -> Result:
        """CNI ADD, on the calling (request) thread; blocks."""
        env, conf = call.env, call.conf
        fd = self._require_netns(call)
        key = attachment_key(conf.name, env.container_id, env.ifname)
        with self.locks.hold(key):
            existing = self.rt.store.get_attachment(key)
            if existing is not None:
                reused = self._readd(call, existing)
                if reused is not None:
                    return reused
            return self._add_sync(call, hints, key, fd)

    def _readd(self, call: Call, rec: AttachmentRecord) -> Result | None:
        """ADD for a key that already has an attachment: keep it when it is intact, else redo."""
        if rec.state == "assigned" and rec.netns == call.env.netns and call.netns_fd is not None:
            try:
                self._check_kernel(call.netns_fd, rec)
                log.info("ADD repeated for an intact attachment; returning its result", extra={"key": rec.key})
                return parse_result(rec.result, "the stored result")
            except CNIError as e:
                log.warning("ADD repeated; the old attachment is broken, replacing it",
                            extra={"key": rec.key, "error": str(e)})
        self._release_sync(rec, call.netns_fd if rec.netns == call.env.netns else None)
        return None

    def _add_sync(self, call: Call, hints: Hints, key: str, fd: int) -> Result:
        env, conf = call.env, call.conf
        rt = self.rt
        req, defaults = self._request(call, hints)
        network, subnet = choose_network(req, defaults, rt.catalog)
        net_settings = self.cfg.networks.get(rt.catalog.config_name(network))
        if net_settings is None:
            raise InvalidEnvironment(f"network {network.name!r} has no dataplane settings on this node")
        # the node's defaults for this network come last (after the request, the namespace
        # mapping and the CNI config)
        if subnet is None and net_settings.subnet and not req.ips:
            subnet = find_subnet(network, net_settings.subnet)
            if subnet is None:
                raise NotFound(f"networks.{net_settings.name}.subnet {net_settings.subnet!r} is not a subnet "
                               f"of network {network.name!r}")
        if not defaults.security_groups:
            defaults = replace(defaults, security_groups=net_settings.security_groups)
        spec = build_port_spec(req, defaults, network, subnet, node=self.cfg.node_name,
                               cluster_id=self.cfg.cluster_id)
        dataplane = rt.dataplane(net_settings.name)
        host_ifname = host_ifname_for(key)
        pool_key = rt.pools.key_for(spec) if rt.pools is not None else None
        jid = rt.store.journal_begin("ADD", key, {
            "network": net_settings.name, "provider_network_id": network.id, "netns": env.netns,
            "host_ifname": host_ifname, "mode": net_settings.mode})
        crash.point("add:journaled")
        undo: list[tuple[str, Callable[[], None]]] = []
        try:
            t0 = time.perf_counter()
            port = None
            if pool_key is not None and rt.pools is not None:      # a pool hit makes no provider call
                port = rt.pools.manager.acquire(pool_key, attachment_key=key)
            if port is None:
                pool_key = None
                try:
                    port = rt.provider.create_ports(spec, 1)[0]
                except AddressUnavailable as e:     # a static IP/MAC held by a stale port of ours?
                    if not e.holder or not self._reclaim(e.holder, call):
                        raise
                    port = rt.provider.create_ports(spec, 1)[0]
            crash.point("add:port-created")
            rt.store.journal_update(jid, {"port_id": port.id, "mac": port.mac,
                                          "pool_key": pool_key.encode() if pool_key else ""})
            crash.point("add:port-journaled")
            undo.append(("give back the port", partial(self._give_back, port, pool_key)))
            t_port = time.perf_counter()
            subnets = {s.id: s for s in network.subnets}
            mtu = conf.mtu or net_settings.mtu or network.mtu or 1500
            att = convert.build_attachment(key, env.ifname, host_ifname, port, subnets, mtu)
            if pool_key is not None and isinstance(dataplane, ParkingDataplane):
                plugged = dataplane.plug_parked(fd, att)
                undo.append(("park again", lambda: dataplane.return_to_park(fd, att, plugged)))
            else:
                plugged = dataplane.plug(fd, att)
                undo.append(("unplug", lambda: dataplane.unplug(fd, att, plugged)))
            if pool_key is None:        # pooled ports are ACTIVE already; a fresh one may be waited for
                port = rt.wait_active(port)
            t_plug = time.perf_counter()
            crash.point("add:plugged")
            result = convert.build_result(att, plugged, env.netns, net_settings.mode, subnets, port)
            result_dict = result.to_dict("1.1.0")
            rec = self._record(call, key, port, att, plugged, net_settings, result_dict, hints)
            self._commit_add(rec, port, jid, pool_key)
            log.info("ADD done", extra={
                "key": key, "port": port.id, "ips": [str(a) for a in att.addresses],
                "port_ms": round((t_port - t0) * 1000, 2), "plug_ms": round((t_plug - t_port) * 1000, 2)})
            return result          # the object itself: the server writes it in the caller's version
        except BaseException as e:
            log.warning("ADD failed; undoing", extra={"key": key, "error": str(e)})
            clean = True
            for what, step in reversed(undo):
                try:
                    step()
                except Exception as ue:    # keep undoing; the open journal entry lets recovery retry
                    clean = False
                    log.error("undo step failed", extra={"key": key, "step": what, "error": str(ue)})
            if clean:
                rt.store.journal_end(jid)
            raise

    def _commit_add(self, rec: AttachmentRecord, port: Port, jid: int, pool_key: PoolKey | None) -> None:
        store = self.rt.store

        def row(old: PortRecord | None) -> PortRecord:
            now = time.time()
            return PortRecord(
                port_id=port.id, provider=self.cfg.provider, network_id=port.network_id, state="assigned",
                mac=port.mac, fixed_ips=tuple((f.subnet_id, str(f.address)) for f in port.fixed_ips),
                pool_key=pool_key.encode() if pool_key else "", attachment_key=rec.key,
                data={**(old.data if old else {}), **port_data(port)}, created_at=now, updated_at=now)

        if pool_key is None:            # a fresh port has no row yet: built before the lock is taken
            store.save(port=row(None), attachment=rec, journal_end=jid)
            return
        with store.transaction():       # a pool hit's row carries the pool's data: keep it
            store.save(port=row(store.get_port(port.id)), attachment=rec, journal_end=jid)

    def _reclaim(self, holder: str, call: Call) -> bool:
        """A requested address is held by port ``holder``: free it when the port is a stale
        one of this node's (a leak, or the port of a sandbox that is gone without a DEL),
        never when another owner or a live attachment holds it. True when it was freed."""
        rt = self.rt
        row = rt.store.get_port(holder)
        if row is None:
            journal = {e.data.get("port_id") for e in rt.store.journal_pending()}
            owned = {p.id for p in rt.provider.list_owned_ports(self.cfg.cluster_id, self.cfg.node_name)}
            if holder not in owned or holder in journal:
                return False
            rt.provider.delete_ports([holder])
            log.warning("reclaimed a leaked port of this node holding a requested address", extra={"port": holder})
            return True
        rec = rt.store.get_attachment(row.attachment_key) if row.attachment_key else None
        if rec is None or rec.state != "assigned" or rec.container_id == call.env.container_id:
            return False
        if not rec.netns or os.path.exists(rec.netns):
            return False                        # a live sandbox keeps its port
        with self.locks.try_hold(rec.key) as held:
            if not held:
                return False                    # being worked on (its DEL, say): not ours to touch
            current = self.rt.store.get_attachment(rec.key)
            if current is None:
                return True                     # released meanwhile: the address is free
            if current.state != "assigned" or current.port_id != holder:
                return False
            log.warning("releasing the attachment of a sandbox that is gone to reuse its address",
                        extra={"stale": rec.key, "netns": rec.netns, "port": holder})
            self._release_sync(current, None)
        return True

    def _give_back(self, port: Port, pool_key: PoolKey | None) -> None:
        """Undo of getting a port: back to its pool, or delete it."""
        if pool_key is not None and self.rt.pools is not None:
            self.rt.pools.manager.release(port, pool_key)
        else:
            self.rt.provider.delete_ports([port.id])
            self.rt.store.delete_port(port.id)

    def _record(self, call: Call, key: str, port: Port, att: Attachment, plugged: Plugged,
                net: NetworkSettings, result: dict[str, Any], hints: Hints) -> AttachmentRecord:
        now = time.time()
        return AttachmentRecord(
            key=key, network=call.conf.name, container_id=call.env.container_id, ifname=call.env.ifname,
            netns=call.env.netns or "", state="assigned", port_id=port.id, mode=net.mode,
            host_ifname=plugged.host_ifname, result=result, cni_version=call.conf.cni_version,
            pod_namespace=hints.pod_namespace or "", pod_name=hints.pod_name or "",
            pod_uid=hints.pod_uid or "",
            # "network": the node's network (config name) whose dataplane made the links
            plugged={"attachment": convert.attachment_to_dict(att), "plugged": convert.plugged_to_dict(plugged),
                     "network": net.name},
            created_at=now, updated_at=now)

    def _request(self, call: Call, hints: Hints) -> tuple[Request, Defaults]:
        """Split the hints into what the request asks for and the CNI config's defaults,
        so that the namespace mapping ranks between the two."""
        conf = call.conf
        ns = self.cfg.namespaces.get(hints.pod_namespace or "")

        def asked(source: str) -> bool:
            return bool(source) and not source.startswith("config")

        req = Request(
            network=hints.network if asked(hints.network_source) else None,
            network_source=hints.network_source,
            subnet=hints.subnet if asked(hints.subnet_source) else None,
            subnet_source=hints.subnet_source,
            ips=tuple(hints.ips), ips_source=hints.ips_source or "request", mac=hints.mac,
            security_groups=tuple(hints.security_groups) if asked(hints.security_groups_source) else (),
            pod_namespace=hints.pod_namespace or "", pod_name=hints.pod_name or "",
            container_id=call.env.container_id)
        defaults = Defaults(
            network=conf.network, subnet=conf.subnet, security_groups=tuple(conf.security_groups),
            namespace_network=ns.network if ns else None, namespace_subnet=ns.subnet if ns else None,
            namespace_security_groups=ns.security_groups if ns else ())
        return req, defaults

    def _require_netns(self, call: Call) -> int:
        if call.netns_fd is None:
            why = os.strerror(call.netns_errno) if call.netns_errno else "not passed"
            raise InvalidEnvironment(f"CNI_NETNS {call.env.netns!r}: cannot open the network namespace ({why})")
        return call.netns_fd

    # ---- DEL --------------------------------------------------------------------------

    def delete(self, call: Call) -> None:
        """CNI DEL, on the calling (request) thread; blocks."""
        env, conf = call.env, call.conf
        key = attachment_key(conf.name, env.container_id, env.ifname)
        with self.locks.hold(key):
            self._delete_sync(key, call)

    def _delete_sync(self, key: str, call: Call) -> None:
        rec = self.rt.store.get_attachment(key)
        if rec is None:
            log.info("DEL of an unknown attachment: nothing to do", extra={"key": key})
            return
        same_ns = call.netns_fd is not None and (not call.env.netns or call.env.netns == rec.netns)
        self._release_sync(rec, call.netns_fd if same_ns else None)

    def _release_sync(self, rec: AttachmentRecord, fd: int | None) -> None:
        """Undo an attachment: dataplane, port, records. Idempotent and crash-safe."""
        store = self.rt.store
        with store.transaction():       # the intent and the state change land together
            jid = store.journal_begin("DEL", rec.key, {"port_id": rec.port_id})
            store.set_attachment_state(rec.key, "releasing")
        crash.point("del:releasing")
        self.release_sync(rec, fd, jid)
        log.info("DEL done", extra={"key": rec.key, "port": rec.port_id})

    def release_sync(self, rec: AttachmentRecord, fd: int | None, jid: int | None) -> None:
        rt = self.rt
        att = convert.attachment_from_dict(rec.plugged["attachment"]) if rec.plugged else None
        plugged = convert.plugged_from_dict(rec.plugged["plugged"]) if rec.plugged else None
        network = rec.plugged.get("network", "") if rec.plugged else ""
        row = rt.store.get_port(rec.port_id) if rec.port_id else None
        pool_key = PoolKey.decode(row.pool_key) if row is not None and row.pool_key and rt.pools else None
        dp = rt.dataplane(network) if att is not None and network in self.cfg.networks else None
        if dp is not None and att is not None:
            if pool_key is not None and isinstance(dp, ParkingDataplane):
                dp.return_to_park(fd, att, plugged)          # scrubbed and parked for the next pod
            else:
                dp.unplug(fd, att, plugged)
        crash.point("del:unplugged")
        if pool_key is not None and row is not None and rt.pools is not None:
            rt.pools.manager.release(port_from_record(row), pool_key)   # pooled again, or deleted
        elif rec.port_id:
            rt.provider.delete_ports([rec.port_id])
        crash.point("del:port-deleted")
        with rt.store.transaction():
            if rec.port_id and pool_key is None:
                rt.store.delete_port(rec.port_id)
            rt.store.delete_attachment(rec.key)
            if jid is not None:
                rt.store.journal_end(jid)

    # ---- CHECK ------------------------------------------------------------------------

    def check(self, call: Call) -> None:
        env, conf = call.env, call.conf
        if not cniversion.supports_check(conf.cni_version):
            raise IncompatibleVersion(f"cniVersion {conf.cni_version}: CHECK needs 0.4.0 or later")
        fd = self._require_netns(call)
        prev = parse_result(conf.prev_result) if conf.prev_result is not None else None
        key = attachment_key(conf.name, env.container_id, env.ifname)
        with self.locks.hold(key):
            rec = self.rt.store.get_attachment(key)
            if rec is None or rec.state != "assigned":
                raise UnknownContainer(f"no attachment for container {env.container_id} ifname {env.ifname} "
                                       f"on network {conf.name!r}; ADD it first")
            mac = None
            if prev is not None:
                self._check_prev_result(rec, prev)
                # a later plugin of the chain (tuning) may have changed the MAC: the chain's
                # result is what the sandbox must match (spec: CHECK consults prevResult)
                mac = next((i.mac for i in prev.interfaces if i.name == env.ifname and i.sandbox and i.mac),
                           None)
            port = self.rt.provider.get_port(rec.port_id)
            if port is None:
                raise CheckFailed(f"port {rec.port_id} of {key} no longer exists at the provider")
            self._check_kernel(fd, rec, mac)

    def _check_prev_result(self, rec: AttachmentRecord, prev: Result) -> None:
        ours = parse_result(rec.result)
        want = {str(ip.address) for ip in ours.ips}
        have = {str(ip.address) for ip in prev.ips}
        missing = want - have
        if missing:
            raise CheckFailed(f"prevResult lacks address(es) {', '.join(sorted(missing))} that ADD assigned")

    def _check_kernel(self, fd: int, rec: AttachmentRecord, mac: str | None = None) -> None:
        att = convert.attachment_from_dict(rec.plugged["attachment"])
        plugged = convert.plugged_from_dict(rec.plugged["plugged"])
        if mac:
            plugged = replace(plugged, sandbox_mac=mac.lower())
        self.rt.dataplane(rec.plugged.get("network", "")).check(fd, att, plugged)

    # ---- GC ---------------------------------------------------------------------------

    def gc(self, call: Call) -> None:
        conf = call.conf
        valid = set(conf.valid_attachments or ())
        recs = self.rt.store.list_attachments(conf.name)
        failed: list[str] = []
        for rec in recs:
            if (rec.container_id, rec.ifname) in valid:
                continue
            with self.locks.hold(rec.key):
                current = self.rt.store.get_attachment(rec.key)
                if current is None:
                    continue
                try:
                    fd = open_netns(current.netns)
                    try:
                        self._release_sync(current, fd)
                    finally:
                        if fd is not None:
                            os.close(fd)
                    log.info("GC released a stale attachment", extra={"key": rec.key})
                except CNIError as e:
                    failed.append(f"{rec.key}: {e}")
        if failed:
            raise TryAgainLater(f"GC could not release {len(failed)} attachment(s)", "; ".join(failed))

    # ---- STATUS -----------------------------------------------------------------------

    def status(self, call: Call) -> None:
        if not self.ready:
            raise NotAvailable("cloudnic-agent is starting (recovering its journal)")
        health = self.rt.provider.health()
        network = call.conf.network
        if not health.ok:
            # ADDs can still be served from the warm pool while the provider is down
            pools = self.rt.pools
            net = pools.networks.get(network) if pools is not None else None
            ready = sum(int(p["ready"]) for p in pools.stats() if net is not None and p["network_id"] == net.id) \
                if pools is not None else 0
            if ready == 0:
                raise NotAvailable(f"provider {self.cfg.provider} is not reachable and network {network!r} has no "
                                   f"pooled port ready: {health.detail}")
            log.warning("provider down; serving from the pool", extra={"ready": ready, "network": network})
        free = self.rt.free_addresses(network)
        if free is not None and free <= 0:
            raise NotAvailable(f"network {network!r} has no free address; add a subnet or widen one")


def open_netns(path: str) -> int | None:
    """A descriptor of the netns at ``path`` (recorded at ADD), or None when it is gone."""
    if not path:
        return None
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
