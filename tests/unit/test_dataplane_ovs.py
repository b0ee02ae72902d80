"""The ovs binding's OVSDB requests, against a fake ovsdb-server on a unix socket.

The fake keeps a tiny Bridge/Port/Interface/Open_vSwitch database and implements the
few RFC 7047 operations the binding uses, so the tests assert both the exact requests
and their outcome. This kernel has no openvswitch module; the last test proves the error
a real node without Open vSwitch gets.
"""

from __future__ import annotations

import copy
import json
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cloudnic.dataplane import OvsDataplane, make_dataplane
from cloudnic.dataplane.ovs import (
    DEFAULT_SOCKET,
    OvsBridge,
    OvsdbClient,
    add_port_ops,
    del_port_ops,
    interface_ids,
    lookup_ops,
    update_ids_ops,
)
from cloudnic.errors import DataplaneError, InvalidConfig, TryAgainLater

TAP = "tap0123abcd-01"
PORT = "0123abcd-0123-4567-89ab-cdef01234567"
MAC = "fa:16:3e:11:22:33"
IDS = {"attached-mac": MAC, "iface-id": PORT, "iface-status": "active", "vm-uuid": "net/ctr1/eth0"}


class OpError(Exception):
    pass


class FakeOvsdb:
    """A minimal ovsdb-server: JSON-RPC over a unix socket, a few tables, transactions."""

    def __init__(self, path: str, bridges: tuple[str, ...] = ("br-int",)) -> None:
        self.path = path
        self.db: dict[str, dict[str, dict[str, Any]]] = {"Bridge": {}, "Port": {}, "Interface": {},
                                                         "Open_vSwitch": {str(uuid.uuid4()): {"next_cfg": 0}}}
        for b in bridges:
            self.db["Bridge"][str(uuid.uuid4())] = {"name": b, "ports": set()}
        self.requests: list[dict[str, Any]] = []
        self.echo_first = False
        self.split_replies = False
        self.silent = False
        self.fail_op: str | None = None
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(8)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.sock.close()
        os.unlink(self.path)

    # ---- transport ----------------------------------------------------------------------

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                self._conversation(conn)

    def _conversation(self, conn: socket.socket) -> None:
        dec, buf = json.JSONDecoder(), ""
        if self.echo_first:
            conn.sendall(json.dumps({"method": "echo", "params": ["ping"], "id": "echo"}).encode())
        while True:
            data = conn.recv(65536)
            if not data:
                return
            buf += data.decode()
            while buf.strip():
                try:
                    msg, end = dec.raw_decode(buf.lstrip())
                except json.JSONDecodeError:
                    break
                buf = buf.lstrip()[end:]
                if msg.get("id") == "echo":
                    assert msg == {"result": ["ping"], "error": None, "id": "echo"}
                    continue
                self.requests.append(msg)
                if self.silent:
                    continue
                reply = json.dumps({"id": msg["id"], "error": None, "result": self._handle(msg)}).encode()
                if self.split_replies:
                    conn.sendall(reply[:7])
                    conn.sendall(reply[7:])
                else:
                    conn.sendall(reply)

    # ---- the database -------------------------------------------------------------------

    def _handle(self, msg: dict[str, Any]) -> Any:
        assert msg["method"] == "transact" and msg["params"][0] == "Open_vSwitch"
        saved = copy.deepcopy(self.db)
        named: dict[str, str] = {}
        results: list[Any] = []
        for op in msg["params"][1:]:
            try:
                if op["op"] == self.fail_op:
                    raise OpError("constraint violation")
                results.append(getattr(self, "_" + op["op"])(op, named))
            except OpError as e:
                results.append({"error": str(e), "details": f"{op['op']} on {op['table']}"})
                self.db = saved
                break
        return results

    def _ref(self, value: Any, named: dict[str, str]) -> str:
        return named[value[1]] if value[0] == "named-uuid" else value[1]

    def _match(self, row: dict[str, Any], where: list[list[Any]]) -> bool:
        for col, fn, value in where:
            if fn == "==" and row.get(col) != value:
                return False
            if fn == "includes" and value[1] not in row.get(col, set()):
                return False
        return True

    def _rows(self, op: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        return [(u, r) for u, r in self.db[op["table"]].items() if self._match(r, op["where"])]

    def _out(self, u: str, row: dict[str, Any], columns: list[str]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for c in columns:
            if c == "_uuid":
                out[c] = ["uuid", u]
            elif c == "ports":
                out[c] = ["set", [["uuid", p] for p in sorted(row["ports"])]]
            elif c == "external_ids":
                out[c] = ["map", sorted([k, v] for k, v in row["external_ids"].items())]
            else:
                out[c] = row[c]
        return out

    def _select(self, op: dict[str, Any], named: dict[str, str]) -> dict[str, Any]:
        return {"rows": [self._out(u, r, op["columns"]) for u, r in self._rows(op)]}

    def _wait(self, op: dict[str, Any], named: dict[str, str]) -> dict[str, Any]:
        assert op["timeout"] == 0 and op["until"] == "=="
        if [self._out(u, r, op["columns"]) for u, r in self._rows(op)] != op["rows"]:
            raise OpError("timed out")
        return {}

    def _insert(self, op: dict[str, Any], named: dict[str, str]) -> dict[str, Any]:
        u = str(uuid.uuid4())
        row = dict(op["row"])
        if op["table"] == "Interface":
            row["external_ids"] = dict(row["external_ids"][1])
        if op["table"] == "Port":
            row["interfaces"] = self._ref(row["interfaces"], named)
        if any(r["name"] == row["name"] for r in self.db[op["table"]].values()):
            raise OpError("constraint violation")
        self.db[op["table"]][u] = row
        named[op["uuid-name"]] = u
        return {"uuid": ["uuid", u]}

    def _mutate(self, op: dict[str, Any], named: dict[str, str]) -> dict[str, Any]:
        rows = self._rows(op)
        for _, row in rows:
            for col, how, value in op["mutations"]:
                if col == "next_cfg":
                    row[col] += value
                    continue
                refs = {self._ref(v, named) for v in value[1]}
                row[col] = row[col] | refs if how == "insert" else row[col] - refs
        self._gc()
        return {"count": len(rows)}

    def _update(self, op: dict[str, Any], named: dict[str, str]) -> dict[str, Any]:
        rows = self._rows(op)
        for _, row in rows:
            row["external_ids"] = dict(op["row"]["external_ids"][1])
        return {"count": len(rows)}

    def _gc(self) -> None:
        """Ports and Interfaces are not root tables: unreferenced rows disappear."""
        used = set().union(*(b["ports"] for b in self.db["Bridge"].values()))
        self.db["Port"] = {u: r for u, r in self.db["Port"].items() if u in used}
        ifaces = {r["interfaces"] for r in self.db["Port"].values()}
        self.db["Interface"] = {u: r for u, r in self.db["Interface"].items() if u in ifaces}

    # ---- views for assertions -------------------------------------------------------------

    def ports_of(self, bridge: str) -> set[str]:
        (b,) = [r for r in self.db["Bridge"].values() if r["name"] == bridge]
        return {self.db["Port"][p]["name"] for p in b["ports"]}

    def ids_of(self, name: str) -> dict[str, str]:
        (i,) = [r for r in self.db["Interface"].values() if r["name"] == name]
        return dict(i["external_ids"])

    def port_uuid(self, name: str) -> str:
        (u,) = [u for u, r in self.db["Port"].items() if r["name"] == name]
        return u

    @property
    def next_cfg(self) -> int:
        (row,) = self.db["Open_vSwitch"].values()
        return int(row["next_cfg"])

    def transacts(self) -> list[list[dict[str, Any]]]:
        return [r["params"][1:] for r in self.requests]


@pytest.fixture
def ovsdb(tmp_path: Path) -> Iterator[FakeOvsdb]:
    fake = FakeOvsdb(str(tmp_path / "db.sock"))
    try:
        yield fake
    finally:
        fake.close()


@pytest.fixture
def br(ovsdb: FakeOvsdb) -> OvsBridge:
    return OvsBridge(OvsdbClient(ovsdb.path, timeout_s=2), "br-int")


def test_add_port_is_one_lookup_and_one_atomic_transaction(ovsdb: FakeOvsdb, br: OvsBridge) -> None:
    assert br.add_port(TAP, interface_ids(PORT, MAC, "net/ctr1/eth0")) is True
    assert ovsdb.transacts() == [
        [{"op": "select", "table": "Bridge", "where": [["name", "==", "br-int"]], "columns": ["_uuid", "ports"]},
         {"op": "select", "table": "Port", "where": [["name", "==", TAP]], "columns": ["_uuid"]}],
        [{"op": "wait", "table": "Bridge", "where": [["name", "==", "br-int"]], "columns": ["name"],
          "until": "==", "rows": [{"name": "br-int"}], "timeout": 0},
         {"op": "wait", "table": "Port", "where": [["name", "==", TAP]], "columns": ["name"],
          "until": "==", "rows": [], "timeout": 0},
         {"op": "insert", "table": "Interface", "uuid-name": "iface",
          "row": {"name": TAP, "external_ids": ["map", [["attached-mac", MAC], ["iface-id", PORT],
                                                        ["iface-status", "active"],
                                                        ["vm-uuid", "net/ctr1/eth0"]]]}},
         {"op": "insert", "table": "Port", "uuid-name": "port",
          "row": {"name": TAP, "interfaces": ["named-uuid", "iface"]}},
         {"op": "mutate", "table": "Bridge", "where": [["name", "==", "br-int"]],
          "mutations": [["ports", "insert", ["set", [["named-uuid", "port"]]]]]},
         {"op": "mutate", "table": "Open_vSwitch", "where": [], "mutations": [["next_cfg", "+=", 1]]}],
    ]
    assert ovsdb.ports_of("br-int") == {TAP}
    assert ovsdb.ids_of(TAP) == IDS
    assert ovsdb.next_cfg == 1, "ovs-vswitchd is asked to reconfigure"


def test_re_adding_an_existing_port_only_rewrites_its_external_ids(ovsdb: FakeOvsdb, br: OvsBridge) -> None:
    br.add_port(TAP, interface_ids(PORT, "fa:16:3e:00:00:99", "old"))
    ovsdb.requests.clear()
    assert br.add_port(TAP, interface_ids(PORT, MAC, "net/ctr1/eth0")) is False
    assert ovsdb.transacts() == [
        lookup_ops("br-int", TAP),
        [{"op": "update", "table": "Interface", "where": [["name", "==", TAP]],
          "row": {"external_ids": ["map", [["attached-mac", MAC], ["iface-id", PORT], ["iface-status", "active"],
                                           ["vm-uuid", "net/ctr1/eth0"]]]}}],
    ]
    assert ovsdb.ports_of("br-int") == {TAP}
    assert ovsdb.ids_of(TAP) == IDS
    assert ovsdb.next_cfg == 1


def test_remove_port_takes_it_out_of_the_bridge_and_is_idempotent(ovsdb: FakeOvsdb, br: OvsBridge) -> None:
    br.add_port(TAP, IDS)
    br.add_port("tapother0000", interface_ids("other", MAC, "x"))
    port = ovsdb.port_uuid(TAP)
    ovsdb.requests.clear()
    assert br.del_port(TAP) is True
    assert ovsdb.transacts() == [
        lookup_ops("br-int", TAP),
        [{"op": "mutate", "table": "Bridge", "where": [["ports", "includes", ["uuid", port]]],
          "mutations": [["ports", "delete", ["set", [["uuid", port]]]]]},
         {"op": "mutate", "table": "Open_vSwitch", "where": [], "mutations": [["next_cfg", "+=", 1]]}],
    ]
    assert ovsdb.ports_of("br-int") == {"tapother0000"}
    assert br.iface_ids(TAP) is None
    ovsdb.requests.clear()
    assert br.del_port(TAP) is False
    assert ovsdb.transacts() == [lookup_ops("br-int", TAP)], "nothing to remove: one lookup, no change"


def test_iface_ids_reads_back_what_add_port_wrote(ovsdb: FakeOvsdb, br: OvsBridge) -> None:
    br.add_port(TAP, IDS)
    assert br.iface_ids(TAP) == IDS


def test_a_missing_bridge_is_named(tmp_path: Path) -> None:
    fake = FakeOvsdb(str(tmp_path / "db.sock"), bridges=("br-ex",))
    try:
        br = OvsBridge(OvsdbClient(fake.path), "br-int")
        with pytest.raises(DataplaneError, match=r"OVS bridge br-int does not exist in OVSDB at unix:.*db\.sock; "
                                                 r"create it \(ovs-vsctl add-br br-int\)"):
            br.add_port(TAP, IDS)
        with pytest.raises(DataplaneError, match="OVS bridge br-int does not exist"):
            OvsDataplane(ovsdb_socket=fake.path)
    finally:
        fake.close()


def test_a_port_on_another_bridge_is_refused(tmp_path: Path) -> None:
    fake = FakeOvsdb(str(tmp_path / "db.sock"), bridges=("br-int", "br-ex"))
    try:
        OvsBridge(OvsdbClient(fake.path), "br-ex").add_port(TAP, IDS)
        with pytest.raises(DataplaneError, match=f"OVS port {TAP} exists on another bridge than br-int"):
            OvsBridge(OvsdbClient(fake.path), "br-int").add_port(TAP, IDS)
        assert fake.ports_of("br-int") == set()
    finally:
        fake.close()


def test_a_failed_operation_names_it_and_changes_nothing(ovsdb: FakeOvsdb, br: OvsBridge) -> None:
    ovsdb.fail_op = "insert"
    with pytest.raises(DataplaneError, match=f"OVSDB adding port {TAP} to br-int: insert failed: constraint "
                                             "violation"):
        br.add_port(TAP, IDS)
    assert ovsdb.ports_of("br-int") == set()
    assert ovsdb.next_cfg == 0


def test_echo_requests_are_answered_and_split_replies_are_reassembled(ovsdb: FakeOvsdb, br: OvsBridge) -> None:
    ovsdb.echo_first = True
    ovsdb.split_replies = True
    assert br.add_port(TAP, IDS) is True
    assert br.iface_ids(TAP) == IDS


def test_a_silent_server_is_a_try_again_error(ovsdb: FakeOvsdb) -> None:
    ovsdb.silent = True
    with pytest.raises(TryAgainLater, match=r"did not answer transact within 0\.2 s") as e:
        OvsBridge(OvsdbClient(ovsdb.path, timeout_s=0.2), "br-int").del_port(TAP)
    assert e.value.code == 11


class BadServer:
    """A unix socket that misbehaves: ``silent`` accepts and never answers, ``hangup`` closes at once,
    ``refuse`` is bound but not listening (connect gets ECONNREFUSED)."""

    def __init__(self, path: str, how: str) -> None:
        self.path, self.how = path, how
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.held: list[socket.socket] = []
        if how != "refuse":
            self.sock.listen(8)
            threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            if self.how == "hangup":
                conn.close()
            else:
                self.held.append(conn)

    def close(self) -> None:
        self.sock.close()
        for c in self.held:
            c.close()
        os.unlink(self.path)


@pytest.fixture(params=["missing", "refuse", "silent", "hangup"])
def unreachable(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    path = str(tmp_path / "db.sock")
    if request.param == "missing":
        yield path
        return
    server = BadServer(path, request.param)
    try:
        yield path
    finally:
        server.close()


def test_an_unreachable_ovsdb_at_runtime_is_try_again_later_on_plug_unplug_and_check(unreachable: str) -> None:
    br = OvsBridge(OvsdbClient(unreachable, timeout_s=0.3), "br-int")
    for what, call in (("plug", lambda: br.add_port(TAP, IDS)), ("unplug", lambda: br.del_port(TAP)),
                       ("check", lambda: br.iface_ids(TAP))):
        with pytest.raises(TryAgainLater) as e:
            call()
        assert e.value.code == 11, what
        assert f"OVSDB at unix:{unreachable} " in e.value.msg, "the socket is named"
        assert "systemctl status openvswitch-switch" in e.value.msg, "and what to check"
        assert e.value.details, "with the cause"


def test_an_ovsdb_that_comes_back_serves_the_retry(tmp_path: Path) -> None:
    path = str(tmp_path / "db.sock")
    br = OvsBridge(OvsdbClient(path, timeout_s=1), "br-int")
    with pytest.raises(TryAgainLater, match="is not reachable"):
        br.add_port(TAP, IDS)
    fake = FakeOvsdb(path)
    try:
        assert br.add_port(TAP, IDS) is True
        assert fake.ports_of("br-int") == {TAP}
    finally:
        fake.close()


def test_an_error_reply_is_not_a_try_again(ovsdb: FakeOvsdb, br: OvsBridge) -> None:
    ovsdb.fail_op = "insert"
    with pytest.raises(DataplaneError) as e:
        br.add_port(TAP, IDS)
    assert not isinstance(e.value, TryAgainLater) and e.value.code == 104


def test_construction_against_an_unreachable_ovsdb_is_a_setup_error(unreachable: str) -> None:
    with pytest.raises(DataplaneError, match=f"cannot reach OVSDB at unix:{unreachable}; the ovs dataplane needs "
                                             "Open vSwitch running") as e:
        OvsDataplane(ovsdb_socket=unreachable, timeout_s=0.3)
    assert e.value.code == 104


def test_the_request_builders_are_pure() -> None:
    assert add_port_ops("br-int", TAP, IDS) == add_port_ops("br-int", TAP, dict(reversed(list(IDS.items()))))
    assert update_ids_ops(TAP, IDS)[0]["row"]["external_ids"][1][0] == ["attached-mac", MAC]
    assert del_port_ops("u-1")[0]["where"] == [["ports", "includes", ["uuid", "u-1"]]]


def test_the_dataplane_is_built_against_a_reachable_ovsdb(ovsdb: FakeOvsdb) -> None:
    dp = make_dataplane("ovs", ovsdb_socket=ovsdb.path, mtu=1450, timeout_s=1.5)
    try:
        assert isinstance(dp, OvsDataplane)
        assert (dp.mode, dp.bridge, dp.mtu) == ("ovs", "br-int", 1450)
    finally:
        dp.close()


@pytest.mark.parametrize(("settings", "message"), [
    ({"bridge": "br/int"}, "OVS bridge name"),
    ({"timeout_s": 0}, "timeout_s must be positive"),
    ({"timeout_s": "5"}, "timeout_s must be positive"),
])
def test_bad_settings_are_config_errors(ovsdb: FakeOvsdb, settings: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidConfig, match=message):
        OvsDataplane(ovsdb_socket=ovsdb.path, **settings)


@pytest.mark.functional
def test_on_this_machine_without_ovsdb_construction_names_the_socket() -> None:
    assert not os.path.exists(DEFAULT_SOCKET), "this test describes a node without Open vSwitch"
    with pytest.raises(DataplaneError, match=r"cannot reach OVSDB at unix:/run/openvswitch/db\.sock; the ovs "
                                             r"dataplane needs Open vSwitch running") as e:
        make_dataplane("ovs")
    assert e.value.code == 104
    assert "No such file or directory" in e.value.details
