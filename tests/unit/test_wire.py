"""The wire codec: round trips, every malformed frame, fd passing over a socketpair."""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloudnic.agent import wire
from cloudnic.agent.wire import AdminRequest, Request, WireError

FIELDS = {
    "CNI_COMMAND": "ADD",
    "CNI_CONTAINERID": "c0ffee",
    "CNI_ARGS": "K8S_POD_NAME=a;IP=10.1.2.3",
    "CNI_PATH": "/opt/cni/bin:/usr/lib/cni",
    "cloudnic.request_id": "0123456789abcdef",
    "cloudnic.timeout_ms": "90000",
    "cloudnic.shim_version": "1",
}


def u32(n: int) -> bytes:
    return struct.pack(">I", n)


def frame(magic: bytes, body: bytes) -> bytes:
    return magic + u32(len(body)) + body


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    agent, shim = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        yield agent, shim
    finally:
        agent.close()
        shim.close()


def read(
    agent: socket.socket, max_body: int = 1 << 20, timeout: float | None = 2.0
) -> Request | AdminRequest:
    return wire.read_any(agent, max_body, timeout)


def open_fds() -> set[str]:
    """This process's open descriptors, less the one the listing used (closed by the time it is
    looked at again)."""
    return {n for n in os.listdir("/proc/self/fd") if os.path.lexists(f"/proc/self/fd/{n}")}


# ---- round trips -------------------------------------------------------------------------


def test_request_round_trip_keeps_fields_order_and_bytes(pair: tuple[socket.socket, socket.socket]) -> None:
    agent, shim = pair
    fields = {**FIELDS, "CNI_IFNAME": "eth0", "CNI_NETNS": "/run/netns/ünï", "cloudnic.netns": "errno:2"}
    stdin = b'{"cniVersion":"1.1.0"}\x00\xff'
    shim.sendall(wire.encode_request(fields, stdin))
    req = read(agent)
    assert isinstance(req, Request)
    assert list(req.fields.items()) == list(fields.items())
    assert req.stdin == stdin
    assert req.netns_fd is None
    assert req.netns_errno == 2
    assert req.request_id == "0123456789abcdef"
    assert req.timeout_ms == 90000
    assert req.env == {k: v for k, v in fields.items() if k.startswith("CNI_")}


def test_request_properties_when_fields_absent_or_odd() -> None:
    req = Request({"cloudnic.timeout_ms": "-5", "cloudnic.netns": "errno:x"}, b"", None)
    assert req.timeout_ms is None
    assert req.netns_errno is None
    assert req.request_id == ""
    assert Request({"cloudnic.netns": "fd"}, b"", None).netns_errno is None


def test_partial_reads_one_byte_at_a_time(pair: tuple[socket.socket, socket.socket]) -> None:
    agent, shim = pair
    data = wire.encode_request(FIELDS, b"x" * 300)

    def trickle() -> None:
        for i in range(len(data)):
            shim.send(data[i : i + 1])
            if i % 50 == 0:
                time.sleep(0.001)

    t = threading.Thread(target=trickle)
    t.start()
    req = read(agent)
    t.join()
    assert isinstance(req, Request)
    assert req.fields == FIELDS
    assert req.stdin == b"x" * 300


def test_large_body_in_chunks(pair: tuple[socket.socket, socket.socket]) -> None:
    agent, shim = pair
    stdin = os.urandom(3 << 20)
    t = threading.Thread(target=shim.sendall, args=(wire.encode_request(FIELDS, stdin),))
    t.start()
    req = read(agent, max_body=4 << 20)
    t.join()
    assert isinstance(req, Request)
    assert req.stdin == stdin


def test_duplicate_field_first_wins(pair: tuple[socket.socket, socket.socket]) -> None:
    agent, shim = pair
    body = u32(2) + u32(5) + b"CNI_A" + u32(1) + b"1" + u32(5) + b"CNI_A" + u32(1) + b"2" + u32(0)
    shim.sendall(frame(b"CNI1", body))
    req = read(agent)
    assert isinstance(req, Request)
    assert req.fields == {"CNI_A": "1"}


def test_response_round_trip() -> None:
    data = wire.encode_response(3, b'{"code":3}', b"log line\n")
    assert data[:4] == b"CNR1"
    assert wire.decode_response(data) == wire.Response(3, b'{"code":3}', b"log line\n")
    assert wire.decode_response(wire.encode_response(0, b"")) == wire.Response(0, b"", b"")


@pytest.mark.parametrize("code", [-1, 1 << 32])
def test_response_exit_code_out_of_range(code: int) -> None:
    with pytest.raises(ValueError, match="exit code"):
        wire.encode_response(code, b"")


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"CNR1" + u32(11) + b"\0" * 11, "malformed"),
        (b"CNR1" + u32(12) + u32(0) + u32(5) + u32(0), "malformed"),
        (b"CNR1" + u32(13) + u32(0) + u32(0) + u32(0) + b"x", "malformed"),
        (b"XXXX" + u32(12) + b"\0" * 12, "bad_magic"),
        (b"CNR1" + u32(20) + b"\0" * 12, "malformed"),
        (b"CNR1", "eof"),
    ],
)
def test_decode_response_rejects(data: bytes, kind: str) -> None:
    with pytest.raises(WireError) as err:
        wire.decode_response(data)
    assert err.value.kind == kind


def test_admin_round_trip(pair: tuple[socket.socket, socket.socket]) -> None:
    agent, shim = pair
    shim.sendall(wire.encode_admin({"op": "status", "verbose": True}))
    req = read(agent)
    assert isinstance(req, AdminRequest)
    assert req.op == "status"
    assert req.body == {"op": "status", "verbose": True}
    assert AdminRequest({"op": 3}).op == ""


@pytest.mark.parametrize("body", [b"[1,2]", b"not json", b"\xff\xfe", b""])
def test_admin_body_must_be_a_json_object(pair: tuple[socket.socket, socket.socket], body: bytes) -> None:
    agent, shim = pair
    shim.sendall(frame(b"ADM1", body))
    with pytest.raises(WireError) as err:
        read(agent)
    assert err.value.kind == "malformed"


def test_read_frame_returns_admin_reply(pair: tuple[socket.socket, socket.socket]) -> None:
    agent, shim = pair
    shim.sendall(wire.encode_admin_reply({"ok": True}))

    magic, body = wire.read_frame(agent, 1024, {wire.MAGIC_ADMIN_REPLY}, 2.0)
    assert magic == b"ADR1"
    assert wire.decode_admin(body) == {"ok": True}


def test_read_request_refuses_admin_frame(pair: tuple[socket.socket, socket.socket]) -> None:
    agent, shim = pair
    shim.sendall(wire.encode_admin({"op": "x"}))

    with pytest.raises(WireError) as err:
        wire.read_request(agent, 1024, 2.0)
    assert err.value.kind == "bad_magic"


# ---- malformed requests ------------------------------------------------------------------


def body_with(*parts: bytes) -> bytes:
    return b"".join(parts)


MALFORMED = {
    "bad_magic": (b"CNI2" + u32(8) + u32(0) + u32(0), "bad_magic"),
    "http": (b"GET / HTTP/1.1\r\n\r\n", "bad_magic"),
    "eof_before_header": (b"", "eof"),
    "eof_in_header": (b"CNI1\0\0", "eof"),
    "eof_in_body": (b"CNI1" + u32(100) + u32(0), "eof"),
    "empty_body": (frame(b"CNI1", b""), "malformed"),
    "count_impossible": (frame(b"CNI1", u32(1000) + u32(0)), "malformed"),
    "key_past_end": (frame(b"CNI1", u32(1) + u32(50) + b"CNI_X" + u32(0) + u32(0)), "malformed"),
    "value_past_end": (frame(b"CNI1", u32(1) + u32(1) + b"k" + u32(99) + b"v" + u32(0)), "malformed"),
    "missing_stdin_len": (frame(b"CNI1", u32(1) + u32(1) + b"k" + u32(1) + b"v"), "malformed"),
    "stdin_past_end": (frame(b"CNI1", u32(0) + u32(10) + b"abc"), "malformed"),
    "trailing_bytes": (frame(b"CNI1", u32(0) + u32(1) + b"a" + b"junk"), "malformed"),
    "key_not_utf8": (frame(b"CNI1", u32(1) + u32(2) + b"\xc3\x28" + u32(1) + b"v" + u32(0)), "malformed"),
    "value_not_utf8": (frame(b"CNI1", u32(1) + u32(1) + b"k" + u32(1) + b"\xff" + u32(0)), "malformed"),
    "netns_fd_missing": (wire.encode_request({"cloudnic.netns": "fd"}, b""), "malformed"),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_request(pair: tuple[socket.socket, socket.socket], name: str) -> None:
    agent, shim = pair
    data, kind = MALFORMED[name]
    shim.sendall(data)
    shim.shutdown(socket.SHUT_WR)
    with pytest.raises(WireError) as err:
        read(agent)
    assert err.value.kind == kind
    assert str(err.value)


def test_body_over_max_raises_after_header_only(pair: tuple[socket.socket, socket.socket]) -> None:
    agent, shim = pair
    shim.sendall(b"CNI1" + u32(5000))  # header only: the body never comes
    start = time.monotonic()
    with pytest.raises(WireError) as err:
        read(agent, max_body=4096, timeout=5.0)
    assert err.value.kind == "too_large"
    assert "5000" in err.value.message and "4096" in err.value.message
    assert time.monotonic() - start < 1.0
    # the connection is still usable for an answer
    agent.setblocking(True)
    agent.sendall(wire.encode_response(1, b"{}"))
    assert shim.recv(100)[:4] == b"CNR1"


def test_read_deadline(pair: tuple[socket.socket, socket.socket]) -> None:
    agent, shim = pair
    shim.sendall(b"CNI1" + u32(20) + u32(0))
    start = time.monotonic()
    with pytest.raises(WireError) as err:
        read(agent, timeout=0.3)
    assert err.value.kind == "timeout"
    assert 0.25 < time.monotonic() - start < 2.0


def test_read_without_deadline_waits_for_data(pair: tuple[socket.socket, socket.socket]) -> None:
    agent, shim = pair
    timer = threading.Timer(0.2, shim.sendall, args=(wire.encode_request(FIELDS, b"late"),))
    timer.start()
    req = read(agent, timeout=None)
    timer.join()
    assert isinstance(req, Request)
    assert req.stdin == b"late"


# ---- fd passing --------------------------------------------------------------------------


def test_netns_fd_passes_and_refers_to_same_file(
    pair: tuple[socket.socket, socket.socket], tmp_path: Path
) -> None:
    agent, shim = pair
    target = tmp_path / "netns-stand-in"
    target.write_bytes(b"")
    fd = os.open(target, os.O_RDONLY)
    try:
        data = wire.encode_request({**FIELDS, "cloudnic.netns": "fd"}, b"{}")
        socket.send_fds(shim, [data[:10]], [fd])
        shim.sendall(data[10:])
    finally:
        os.close(fd)
    req = read(agent)
    assert isinstance(req, Request)
    assert req.netns_fd is not None
    try:
        assert os.fstat(req.netns_fd).st_ino == target.stat().st_ino
        assert os.get_inheritable(req.netns_fd) is False
    finally:
        req.close()


def test_extra_fds_are_closed(pair: tuple[socket.socket, socket.socket], tmp_path: Path) -> None:
    agent, shim = pair
    fds = [os.open(tmp_path, os.O_RDONLY) for _ in range(3)]
    data = wire.encode_request({"cloudnic.netns": "fd"}, b"")
    socket.send_fds(shim, [data], fds)
    for fd in fds:
        os.close(fd)
    before = open_fds()
    req = read(agent)
    assert isinstance(req, Request)
    assert req.netns_fd is not None
    assert open_fds() - before == {str(req.netns_fd)}
    req.close()
    assert open_fds() - before == set()


@pytest.mark.parametrize("payload", [b"CNI1" + u32(3) + b"abc", b"XXXX" + u32(0)])
def test_fds_closed_when_request_is_malformed(
    pair: tuple[socket.socket, socket.socket], tmp_path: Path, payload: bytes
) -> None:
    agent, shim = pair
    fd = os.open(tmp_path, os.O_RDONLY)
    socket.send_fds(shim, [payload], [fd])
    os.close(fd)
    before = open_fds()
    with pytest.raises(WireError):
        read(agent)
    assert open_fds() - before == set()


def test_unannounced_fd_is_closed(pair: tuple[socket.socket, socket.socket], tmp_path: Path) -> None:
    agent, shim = pair
    fd = os.open(tmp_path, os.O_RDONLY)
    socket.send_fds(shim, [wire.encode_admin({"op": "x"})], [fd])
    os.close(fd)
    before = open_fds()
    assert isinstance(read(agent), AdminRequest)
    assert open_fds() - before == set()


# ---- blocking admin client -----------------------------------------------------------------


def serve_once(path: str, reply: bytes | None) -> threading.Thread:
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)

    def run() -> None:
        with srv:
            conn, _ = srv.accept()
            with conn:
                conn.recv(65536)
                if reply is None:
                    time.sleep(1.0)
                else:
                    conn.sendall(reply)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_admin_call_round_trip(tmp_path: Path) -> None:
    path = str(tmp_path / "a.sock")
    t = serve_once(path, wire.encode_admin_reply({"pods": [1, 2]}))
    assert wire.admin_call(path, {"op": "pods"}, 2.0) == {"pods": [1, 2]}
    t.join()


def test_admin_call_unreachable(tmp_path: Path) -> None:
    path = str(tmp_path / "missing.sock")
    with pytest.raises(WireError) as err:
        wire.admin_call(path, {"op": "status"}, 1.0)
    assert err.value.kind == "unreachable"
    assert path in err.value.message


@pytest.mark.parametrize(
    ("reply", "kind"),
    [
        (None, "timeout"),
        (b"ADR1" + u32(5) + b"[1,2]", "malformed"),
        (b"CNR1" + u32(0), "bad_magic"),
        (b"AD", "eof"),
    ],
)
def test_admin_call_bad_replies(tmp_path: Path, reply: bytes | None, kind: str) -> None:
    path = str(tmp_path / "a.sock")
    t = serve_once(path, reply)
    with pytest.raises(WireError) as err:
        wire.admin_call(path, {"op": "status"}, 0.3)
    assert err.value.kind == kind
    t.join()
