"""OVS mode: the host end of the veth is a port of ``br-int``, described for Neutron's OVS agent.

What Nova/os-vif do for an OVS port, done with a veth: the host end ``tap<port_id[:11]>``
becomes a port of the integration bridge whose Interface carries ``external_ids``
``iface-id`` (the Neutron port id: how the OVS agent finds the port), ``attached-mac``
(the port MAC), ``iface-status=active`` and ``vm-uuid`` (the attachment key). The agent
then tags the port with the network's local VLAN, installs its flows and security groups
and reports it ACTIVE. The sandbox side is configured as in linuxbridge mode.

OVSDB is spoken directly: JSON-RPC 1.0 (RFC 7047) over the unix socket of ovsdb-server
(default ``/run/openvswitch/db.sock``), stdlib only, one short connection per call.
Adding a port is one ``transact`` that also asserts the bridge exists and the port does
not (``wait`` ops with timeout 0), inserts Interface and Port, adds the Port to the
bridge and bumps ``next_cfg`` so ovs-vswitchd reconfigures; re-adding an existing port
of the bridge only rewrites its ``external_ids``. Removing it takes the Port out of the
bridge (the Port and Interface rows are then garbage-collected by ovsdb-server).

OVSDB going away at runtime (socket absent or refused, no answer within ``timeout_s``,
connection closed or reset: ovsdb-server restarting) makes plug, unplug and check raise
``TryAgainLater`` (CNI code 11) naming the socket and what to check, so the runtime
retries; an error *reply* stays a ``DataplaneError`` (104). At construction an
unreachable OVSDB is a setup problem: ``DataplaneError`` naming the socket.

This machine's kernel has no openvswitch module: the requests are unit-tested against a
fake OVSDB server, and constructing the dataplane without ovsdb-server fails with a
``DataplaneError`` naming the socket.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import socket
import threading
from dataclasses import replace
from typing import Any

from cloudnic import crash
from cloudnic.dataplane.base import Attachment, Plugged
from cloudnic.dataplane.check import link_problems
from cloudnic.dataplane.kernel import Kernel, LinkInfo
from cloudnic.dataplane.linuxbridge import TAP_RE, run_atomic, sandbox_routes, tap_name
from cloudnic.dataplane.names import require_ifname
from cloudnic.dataplane.netns import netns_socket
from cloudnic.dataplane.spec import PlugSpec, prepare
from cloudnic.dataplane.undo import Undo
from cloudnic.dataplane.veth import (
    HOST,
    SANDBOX,
    VethDataplane,
    configure_sandbox,
    create_veth,
    delete_if_ours,
)
from cloudnic.errors import DataplaneError, InvalidConfig, TryAgainLater

DEFAULT_SOCKET = "/run/openvswitch/db.sock"
# no server (yet), or one that went away: retry later rather than fail the pod
TRANSIENT_ERRNOS = frozenset({errno.ENOENT, errno.ECONNREFUSED, errno.ECONNRESET, errno.EPIPE, errno.ETIMEDOUT,
                              errno.EAGAIN, errno.ECONNABORTED})
DB = "Open_vSwitch"
_ids = itertools.count(1)


class OvsdbClient:
    """JSON-RPC to ovsdb-server over its unix socket; one connection per call."""

    def __init__(self, socket_path: str = DEFAULT_SOCKET, timeout_s: float = 5.0) -> None:
        self.socket_path = socket_path
        self.timeout_s = timeout_s

    def _unreachable(self, doing: str, cause: str) -> TryAgainLater:
        return TryAgainLater(f"OVSDB at unix:{self.socket_path} {doing}; Open vSwitch may be down or restarting: "
                             "check `systemctl status openvswitch-switch` (ovsdb-server) and that the ovs "
                             "setting ovsdb_socket names its socket, then retry", cause)

    def _connect(self) -> socket.socket:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        s.settimeout(self.timeout_s)
        try:
            s.connect(self.socket_path)
        except OSError as e:
            s.close()
            if isinstance(e, TimeoutError) or e.errno in TRANSIENT_ERRNOS:
                raise self._unreachable("is not reachable", e.strerror or str(e)) from e
            raise DataplaneError(f"cannot connect to OVSDB at unix:{self.socket_path}; the agent must run as "
                                 "root and ovsdb_socket must name ovsdb-server's socket", e.strerror or str(e)) from e
        return s

    def call(self, method: str, params: list[Any]) -> Any:
        """Send one request, answer the server's echos, return the matching ``result``.

        An absent, refused, silent or vanishing server is transient (``TryAgainLater``,
        CNI code 11: ovsdb-server restarts with Open vSwitch upgrades); an error reply is not.
        """
        req_id = next(_ids)
        with contextlib.closing(self._connect()) as s:
            try:
                s.sendall(json.dumps({"method": method, "params": params, "id": req_id}).encode())
                for msg in _messages(s):
                    if msg.get("method") == "echo":
                        s.sendall(json.dumps({"result": msg.get("params", []), "error": None,
                                              "id": msg.get("id")}).encode())
                        continue
                    if msg.get("id") != req_id:
                        continue
                    if msg.get("error") is not None:
                        raise DataplaneError(f"OVSDB at unix:{self.socket_path} refused {method}",
                                             json.dumps(msg["error"]))
                    return msg.get("result")
            except TimeoutError as e:
                raise self._unreachable(f"did not answer {method} within {self.timeout_s:g} s",
                                        "timed out") from e
            except OSError as e:
                if e.errno in TRANSIENT_ERRNOS:
                    raise self._unreachable(f"dropped the connection during {method}", e.strerror or str(e)) from e
                raise DataplaneError(f"talking to OVSDB at unix:{self.socket_path} failed during {method}",
                                     e.strerror or str(e)) from e
        raise self._unreachable(f"closed the connection during {method} without answering", "end of stream")

    def transact(self, what: str, ops: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Run ``ops`` in one transaction; raise naming ``what`` and the failing op if any fails."""
        results = self.call("transact", [DB, *ops])
        if not isinstance(results, list):
            raise DataplaneError(f"OVSDB {what}: unexpected reply", json.dumps(results))
        for i, r in enumerate(results):
            if isinstance(r, dict) and r.get("error"):
                op = ops[i]["op"] if i < len(ops) else "commit"
                raise DataplaneError(f"OVSDB {what}: {op} failed: {r['error']}", str(r.get("details", "")))
        return results


def _messages(s: socket.socket) -> Any:
    """JSON values from a stream that concatenates them without framing."""
    decoder = json.JSONDecoder()
    buf = ""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return
        buf += chunk.decode()
        while True:
            buf = buf.lstrip()
            if not buf:
                break
            try:
                value, end = decoder.raw_decode(buf)
            except json.JSONDecodeError:
                break               # incomplete: read more
            buf = buf[end:]
            yield value


# ---- the requests ---------------------------------------------------------------------


def ovs_map(d: dict[str, str]) -> list[Any]:
    return ["map", [[k, d[k]] for k in sorted(d)]]


def interface_ids(port_id: str, mac: str, vm_uuid: str) -> dict[str, str]:
    return {"attached-mac": mac, "iface-id": port_id, "iface-status": "active", "vm-uuid": vm_uuid}


def _named(table: str, name: str, columns: list[str]) -> dict[str, Any]:
    return {"op": "select", "table": table, "where": [["name", "==", name]], "columns": columns}


def _bump_cfg() -> dict[str, Any]:
    return {"op": "mutate", "table": "Open_vSwitch", "where": [], "mutations": [["next_cfg", "+=", 1]]}


def lookup_ops(bridge: str, name: str) -> list[dict[str, Any]]:
    """The bridge's ports and the port named ``name`` (for idempotent add/remove)."""
    return [_named("Bridge", bridge, ["_uuid", "ports"]), _named("Port", name, ["_uuid"])]


def add_port_ops(bridge: str, name: str, external_ids: dict[str, str]) -> list[dict[str, Any]]:
    return [
        {"op": "wait", "table": "Bridge", "where": [["name", "==", bridge]], "columns": ["name"],
         "until": "==", "rows": [{"name": bridge}], "timeout": 0},
        {"op": "wait", "table": "Port", "where": [["name", "==", name]], "columns": ["name"],
         "until": "==", "rows": [], "timeout": 0},
        {"op": "insert", "table": "Interface", "row": {"name": name, "external_ids": ovs_map(external_ids)},
         "uuid-name": "iface"},
        {"op": "insert", "table": "Port", "row": {"name": name, "interfaces": ["named-uuid", "iface"]},
         "uuid-name": "port"},
        {"op": "mutate", "table": "Bridge", "where": [["name", "==", bridge]],
         "mutations": [["ports", "insert", ["set", [["named-uuid", "port"]]]]]},
        _bump_cfg(),
    ]


def update_ids_ops(name: str, external_ids: dict[str, str]) -> list[dict[str, Any]]:
    return [{"op": "update", "table": "Interface", "where": [["name", "==", name]],
             "row": {"external_ids": ovs_map(external_ids)}}]


def del_port_ops(port_uuid: str) -> list[dict[str, Any]]:
    ref = ["uuid", port_uuid]
    return [{"op": "mutate", "table": "Bridge", "where": [["ports", "includes", ref]],
             "mutations": [["ports", "delete", ["set", [ref]]]]}, _bump_cfg()]


def _uuids(value: Any) -> set[str]:
    """UUIDs of an OVSDB set column (``["uuid", u]`` or ``["set", [["uuid", u], ...]]``)."""
    if isinstance(value, list) and value and value[0] == "uuid":
        return {value[1]}
    if isinstance(value, list) and value and value[0] == "set":
        return {v[1] for v in value[1]}
    return set()


class OvsBridge:
    """Port operations on one OVS bridge."""

    def __init__(self, client: OvsdbClient, bridge: str) -> None:
        self.client = client
        self.bridge = bridge
        self._lock = threading.Lock()

    def _lookup(self, name: str) -> tuple[set[str] | None, str | None]:
        """(the bridge's port uuids or None when there is no bridge, the uuid of port ``name``)."""
        bridge, port = self.client.transact(f"looking up port {name} on {self.bridge}", lookup_ops(self.bridge, name))
        brows, prows = bridge.get("rows", []), port.get("rows", [])
        ports = _uuids(brows[0].get("ports")) if brows else None
        return ports, (prows[0]["_uuid"][1] if prows else None)

    def require_bridge(self) -> None:
        ports, _ = self._lookup("")
        if ports is None:
            raise DataplaneError(f"OVS bridge {self.bridge} does not exist in OVSDB at unix:{self.client.socket_path};"
                                 f" create it (ovs-vsctl add-br {self.bridge}) or start the Neutron OVS agent")

    def add_port(self, name: str, external_ids: dict[str, str]) -> bool:
        """Add ``name`` with ``external_ids``; an existing port of the bridge gets them rewritten.

        True when the port was created, False when it was already there.
        """
        with self._lock:
            ports, port = self._lookup(name)
            if ports is None:
                self.require_bridge()
            if port is not None:
                if port not in (ports or set()):
                    raise DataplaneError(f"OVS port {name} exists on another bridge than {self.bridge}; "
                                         f"remove it (ovs-vsctl del-port {name})")
                self.client.transact(f"updating external_ids of {name}", update_ids_ops(name, external_ids))
                return False
            self.client.transact(f"adding port {name} to {self.bridge}", add_port_ops(self.bridge, name,
                                                                                       external_ids))
            return True

    def del_port(self, name: str) -> bool:
        """Take ``name`` out of its bridge; False when there was no such port."""
        with self._lock:
            _, port = self._lookup(name)
            if port is None:
                return False
            self.client.transact(f"removing port {name}", del_port_ops(port))
            return True

    def iface_ids(self, name: str) -> dict[str, str] | None:
        """The ``external_ids`` of interface ``name``, None when it does not exist."""
        (res,) = self.client.transact(f"reading interface {name}", [_named("Interface", name, ["external_ids"])])
        rows = res.get("rows", [])
        if not rows:
            return None
        ids = rows[0].get("external_ids", ["map", []])
        return {k: v for k, v in ids[1]}


class OvsDataplane(VethDataplane):
    mode = "ovs"

    def __init__(self, mtu: int = 1500, host_netns_fd: int | None = None, bridge: str = "br-int",
                 ovsdb_socket: str = DEFAULT_SOCKET, timeout_s: float = 5.0, deferred_delete: bool = False) -> None:
        self.bridge = require_ifname(bridge, "OVS bridge name")
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float) or timeout_s <= 0:
            raise InvalidConfig(f"ovs setting timeout_s must be positive, not {timeout_s!r}")
        self.ovs = OvsBridge(OvsdbClient(ovsdb_socket, timeout_s), self.bridge)
        try:
            self.ovs.require_bridge()      # fail at start, with the socket named, not at the first ADD
        except TryAgainLater as e:         # at start it is a setup problem, not a passing one
            raise DataplaneError(f"cannot reach OVSDB at unix:{ovsdb_socket}; the ovs dataplane needs Open vSwitch "
                                 "running (ovsdb-server and ovs-vswitchd, with the openvswitch kernel module: "
                                 "`systemctl status openvswitch-switch`) or set ovsdb_socket", e.details) from e
        super().__init__(mtu, host_netns_fd, deferred_delete)

    def _normalize(self, att: Attachment) -> Attachment:
        if not att.port_id:
            raise InvalidConfig(f"attachment {att.key} has no port id; the ovs dataplane needs it for iface-id")
        return replace(att, host_ifname=tap_name(att.port_id))

    def plug(self, sandbox_fd: int, att: Attachment) -> Plugged:
        att = self._normalize(att)
        spec = prepare(att, self.mtu, host_end=True, gateway_in_subnet=False)
        host = self.host_kernel()
        with contextlib.closing(netns_socket(sandbox_fd)) as sock:
            sb = Kernel(sock, SANDBOX)
            undo = Undo()
            return run_atomic(f"plugging {spec.ifname}", undo,
                              lambda: self._plug_port(host, sb, sandbox_fd, spec, att.port_id, undo))

    def _plug_port(self, host: Kernel, sb: Kernel, sandbox_fd: int, spec: PlugSpec, port_id: str,
                   undo: Undo) -> Plugged:
        tap, host_mac = spec.host_ifname, self.host_mac_for(spec.host_ifname)
        peer_index = create_veth(host, sb, sandbox_fd, spec, host_mac=host_mac, reap=self._reap_peer)
        undo.add(f"delete {tap}", lambda: delete_if_ours(host, tap, "veth"))
        crash.point("plug:veth-created")
        if self.ovs.add_port(tap, interface_ids(port_id, spec.mac, spec.key)):
            undo.add(f"remove OVS port {tap}", lambda: self.ovs.del_port(tap))
        routes = sandbox_routes(spec)
        configure_sandbox(sb, spec, spec.addresses, routes, index=peer_index)
        crash.point("plug:sandbox-configured")
        gateways = tuple(spec.gateways[v] for v in spec.families if v in spec.gateways)
        return Plugged(host_ifname=tap, host_mac=host_mac, sandbox_ifname=spec.ifname, sandbox_mac=spec.mac,
                       mtu=spec.mtu, routes=routes, gateways=gateways,
                       extra={"bridge": self.bridge, "port_id": port_id})

    def unplug(self, sandbox_fd: int | None, att: Attachment, plugged: Plugged | None) -> None:
        """Delete the veth, then the OVS port (an OVSDB failure is raised so DEL is retried)."""
        if att.port_id:
            att = replace(att, host_ifname=tap_name(att.port_id))
        super().unplug(sandbox_fd, att, plugged)
        self.ovs.del_port((plugged.host_ifname if plugged else "") or att.host_ifname)

    def _check_more(self, host: Kernel, sb: Kernel, sb_link: LinkInfo | None, att: Attachment,
                    plugged: Plugged) -> list[str]:
        problems = link_problems(host, plugged.host_ifname, HOST, kind="veth", mac=plugged.host_mac)[1]
        ids = self.ovs.iface_ids(plugged.host_ifname)
        if ids is None:
            problems.append(f"{plugged.host_ifname} is not a port of OVS bridge {self.bridge}")
        elif ids.get("iface-id") != att.port_id:
            problems.append(f"OVS interface {plugged.host_ifname} has iface-id {ids.get('iface-id')!r}, "
                            f"expected {att.port_id!r}")
        return problems

    def host_objects(self) -> set[str]:
        return {lk.ifname for lk in self.host_kernel().links(kind="veth") if TAP_RE.match(lk.ifname)}
