"""Property-based fuzzing of the agent's RPC socket (docs/wire.md) with hostile frames (issue 5 item 3).

Bad lengths, truncated frames, huge length prefixes, wrong types in the fields and the admin JSON,
descriptors attached or not: the agent answers with one well-formed frame or closes the connection,
never hangs (every read here has a bound), leaks no descriptor, and keeps serving everybody else.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import struct
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloudnic.agent import wire
from tests.hostile.hostile_fuzz import count, fuzz_settings, json_values
from tests.hostile.hostile_runner import Bench, assert_serving, bench, snapshot
from tests.support.agent import AgentHandle

pytestmark = pytest.mark.functional

REPLY_TIMEOUT = 40.0          # the agent's own read deadline is 30 s; EOF arrives at once (SHUT_WR)
U32 = struct.Struct(">I")
SAFE_OPS = ["ping", "status", "attachments", "ports", "pools", "metrics", "", "PING", "audit ", "x" * 300]


@pytest.fixture(scope="module")
def rb(agent: AgentHandle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bench]:
    with bench(agent, tmp_path_factory.mktemp("fuzz-rpc")) as b:
        yield b


def open_fds(agent_pid: int) -> int:
    return len(os.listdir(f"/proc/{agent_pid}/fd"))


@contextlib.contextmanager
def attachable(kinds: list[str], sandbox: str) -> Iterator[list[int]]:
    fds: list[int] = []
    try:
        for kind in kinds:
            if kind == "pipe":
                r, w = os.pipe()
                os.close(w)
                fds.append(r)
            else:
                path = {"null": "/dev/null", "uts": "/proc/self/ns/uts", "netns": f"/run/netns/{sandbox}",
                        "host": "/proc/self/ns/net"}[kind]
                fds.append(os.open(path, os.O_RDONLY | os.O_CLOEXEC))
        yield fds
    finally:
        for fd in fds:
            os.close(fd)


def exchange(path: str, data: bytes, fds: list[int]) -> bytes:
    """Send ``data`` (the fds with the first byte), close our write side, read all the agent says."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(REPLY_TIMEOUT)
        s.connect(path)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            if fds and data:
                socket.send_fds(s, [data[:1]], fds)
                data = data[1:]
            s.sendall(data)
        with contextlib.suppress(OSError):
            s.shutdown(socket.SHUT_WR)
        out = b""
        deadline = time.monotonic() + REPLY_TIMEOUT
        try:
            while chunk := s.recv(1 << 16):
                out += chunk
                assert time.monotonic() < deadline, "the agent keeps talking"
        except ConnectionResetError:
            pass
        except TimeoutError:
            raise AssertionError(f"the agent neither answered nor closed within {REPLY_TIMEOUT} s") from None
    return out


def assert_answer(reply: bytes) -> None:
    """Nothing at all, or exactly one well-formed CNR1/ADR1 frame."""
    if not reply:
        return
    magic = reply[:4]
    assert magic in (wire.MAGIC_RESPONSE, wire.MAGIC_ADMIN_REPLY), f"unexpected reply {reply[:40]!r}"
    if magic == wire.MAGIC_RESPONSE:
        resp = wire.decode_response(reply)
        assert resp.exit_code in (0, 1)
        if resp.stdout:
            obj = json.loads(resp.stdout)
            assert isinstance(obj, dict)
            if resp.exit_code:
                assert isinstance(obj["code"], int) and obj["msg"], obj
    else:
        length = U32.unpack(reply[4:8])[0]
        assert len(reply) == 8 + length
        assert isinstance(wire.decode_admin(reply[8:]), dict)


def check_frame(b: Bench, data: bytes, fd_kinds: list[str], name: str) -> None:
    count(name)
    before = snapshot(b)
    with attachable(fd_kinds, b.sandbox) as fds:
        reply = exchange(b.agent.socket, data, fds)
    assert_answer(reply)
    assert_serving(b.agent)
    assert snapshot(b) == before, f"state changed by frame {data[:200]!r}"


fd_kinds = st.lists(st.sampled_from(["null", "pipe", "uts", "netns", "host"]), max_size=6)
u32s = st.integers(0, 2**32 - 1) | st.sampled_from([0, 1, 7, 8, 12, 1 << 20, (1 << 20) + 1, 2**31, 2**32 - 1])
magics = st.sampled_from([wire.MAGIC_REQUEST, wire.MAGIC_ADMIN, wire.MAGIC_RESPONSE, b"CNI2", b"\0\0\0\0"]) \
    | st.binary(min_size=4, max_size=4)


@fuzz_settings()
@given(data=st.binary(max_size=600), kinds=fd_kinds)
def test_fuzz_raw_bytes(rb: Bench, data: bytes, kinds: list[str]) -> None:
    check_frame(rb, data, kinds, "fuzz_rpc_raw")


@fuzz_settings()
@given(magic=magics, length=u32s, body=st.binary(max_size=400), kinds=fd_kinds)
def test_fuzz_header_and_length(rb: Bench, magic: bytes, length: int, body: bytes, kinds: list[str]) -> None:
    """A header whose length lies (longer, shorter, huge) about the body that follows."""
    check_frame(rb, magic + U32.pack(length) + body, kinds, "fuzz_rpc_header")


def blob(data: bytes, lie: int | None) -> bytes:
    return U32.pack(len(data) if lie is None else lie) + data


FIELD_KEYS = st.sampled_from(["CNI_COMMAND", "CNI_CONTAINERID", "CNI_IFNAME", "CNI_NETNS", "CNI_ARGS", "CNI_PATH",
                              wire.FIELD_NETNS, wire.FIELD_REQUEST_ID, wire.FIELD_TIMEOUT_MS,
                              wire.FIELD_SHIM_VERSION]).map(str.encode) | st.binary(max_size=20)
FIELD_VALUES = st.sampled_from([b"ADD", b"DEL", b"CHECK", b"GC", b"STATUS", b"VERSION", b"fd", b"errno:2",
                                b"errno:x", b"eth0", b"/proc/self/ns/net", b"", b"0", b"99999999999"]) \
    | st.binary(max_size=30)
lies = st.none() | st.none() | st.none() | u32s


@st.composite
def cni_frames(draw: st.DrawFn) -> bytes:
    """CNI1 frames built field by field, with lies in the count and lengths now and then."""
    fields = draw(st.lists(st.tuples(FIELD_KEYS, FIELD_VALUES, lies, lies), max_size=8))
    stdin = draw(st.binary(max_size=200) | json_values.map(lambda v: json.dumps({"cniVersion": "1.1.0",
                                                                                   "x": v}).encode()))
    count_lie = draw(lies)
    body = U32.pack(len(fields) if count_lie is None else count_lie)
    for key, value, klie, vlie in fields:
        body += blob(key, klie) + blob(value, vlie)
    body += blob(stdin, draw(lies))
    body += draw(st.just(b"") | st.just(b"") | st.binary(max_size=10))        # trailing bytes
    length_lie = draw(lies)
    return wire.MAGIC_REQUEST + U32.pack(len(body) if length_lie is None else length_lie) + body


@fuzz_settings()
@given(frame=cni_frames(), kinds=fd_kinds)
def test_fuzz_cni_frames(rb: Bench, frame: bytes, kinds: list[str]) -> None:
    check_frame(rb, frame, kinds, "fuzz_rpc_cni")


admin_bodies = (st.dictionaries(st.sampled_from(["op", "fix", "x"]), st.sampled_from(SAFE_OPS) | json_values,
                                max_size=3).filter(lambda d: d.get("op") != "audit" and "fix" not in d)
                | json_values.filter(lambda v: not isinstance(v, dict)))


@fuzz_settings()
@given(body=admin_bodies | st.binary(max_size=100), raw=st.booleans(), kinds=fd_kinds)
def test_fuzz_admin_frames(rb: Bench, body: Any, raw: bool, kinds: list[str]) -> None:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    if raw and isinstance(body, dict):
        data = data[: len(data) // 2]          # truncated JSON
    check_frame(rb, wire.MAGIC_ADMIN + U32.pack(len(data)) + data, kinds, "fuzz_rpc_admin")


def test_no_descriptor_leak(rb: Bench) -> None:
    """Frames carrying descriptors that the agent refuses: every one of them is closed again."""
    pid = rb.agent.proc.pid
    before = open_fds(pid)
    frames = [b"CNI1" + U32.pack(0xFFFFFFFF), b"CNI1" + U32.pack(8) + b"\xff" * 8, b"ADM1" + U32.pack(2) + b"[]",
              wire.encode_request({"CNI_COMMAND": "ADD", wire.FIELD_NETNS: "fd"}, b"{}"), b"garbage!"]
    for frame in frames * 5:
        with attachable(["null", "pipe", "uts", "netns", "netns", "host"], rb.sandbox) as fds:
            assert_answer(exchange(rb.agent.socket, frame, fds))
    deadline = time.monotonic() + 10
    while open_fds(pid) > before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert open_fds(pid) <= before, f"the agent holds {open_fds(pid) - before} more descriptors"


def test_stalled_clients_do_not_block_others(rb: Bench) -> None:
    """Clients that send half a header and wait: the agent serves everybody else meanwhile."""
    stalled = []
    try:
        for i in range(30):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(rb.agent.socket)
            s.sendall([b"CN", b"CNI1\0\0", b"ADM1\0\0\0\x10{"][i % 3])
            stalled.append(s)
        for _ in range(3):
            assert rb.agent.admin({"op": "ping"}, timeout=5.0)["ok"]
        reply = exchange(rb.agent.socket, wire.encode_request({"CNI_COMMAND": "VERSION"}, b""), [])
        assert json.loads(wire.decode_response(reply).stdout)["supportedVersions"]
    finally:
        for s in stalled:
            s.close()
    assert_serving(rb.agent)
