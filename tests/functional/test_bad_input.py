"""Bad callers (issue 5 item 5, the input side). The bad-input cases that lived here are in the
hostile corpus now (tests/hostile, run by test_hostile_corpus.py).

* the agent socket is root-only, and even when its mode is loosened the agent checks the peer's
  credentials (SO_PEERCRED) and refuses a non-root caller with a clear message;
* the request size bound is exact: a body of max_request_bytes is read, one byte more is refused (5).
"""

from __future__ import annotations

import json
import os
import socket
import stat
import struct
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloudnic.agent import wire
from tests.functional.conftest import NETWORKS
from tests.support.agent import SHIM, AgentHandle, running_agent
from tests.support.cni import conf, run_cni

pytestmark = pytest.mark.functional

NOBODY = 65534
MAX_REQUEST = 1 << 20          # the agent's default max_request_bytes


@pytest.fixture(scope="module")
def agent(node: str) -> Iterator[AgentHandle]:
    """An agent whose socket directory a non-root user may traverse (pytest's tmp dirs are 0700)."""
    with tempfile.TemporaryDirectory(prefix="cnh-sec-") as tmp:
        os.chmod(tmp, 0o755)
        with running_agent(Path(tmp), NETWORKS, host_netns=f"/run/netns/{node}") as handle:
            yield handle


@pytest.fixture
def loosened(agent: AgentHandle) -> Iterator[str]:
    """The agent's socket made world-writable for one test: only SO_PEERCRED stands in the way."""
    os.chmod(agent.socket, 0o666)
    try:
        yield agent.socket
    finally:
        os.chmod(agent.socket, 0o600)


def as_nobody_admin(sock_path: str) -> tuple[str, bytes]:
    """Fork a child that drops to nobody, sends an admin ping, and reports (error, reply bytes)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(10)
                try:
                    s.connect(sock_path)
                except OSError as e:
                    os.write(w, json.dumps({"error": os.strerror(e.errno or 0)}).encode())
                    code = 0
                    raise SystemExit from None
                s.sendall(wire.encode_admin({"op": "ping"}))
                data = b""
                while chunk := s.recv(65536):
                    data += chunk
                os.write(w, data)
                code = 0
        except BaseException:
            pass
        os._exit(code)
    os.close(w)
    out = b""
    while chunk := os.read(r, 65536):
        out += chunk
    os.close(r)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the child failed"
    if out.startswith(wire.MAGIC_ADMIN_REPLY):
        return "", out
    return json.loads(out)["error"], b""


def test_socket_is_root_only(agent: AgentHandle) -> None:
    st = os.stat(agent.socket)
    assert stat.S_ISSOCK(st.st_mode) and st.st_uid == 0
    assert stat.S_IMODE(st.st_mode) == 0o600
    err, _ = as_nobody_admin(agent.socket)
    assert err == os.strerror(13), err                   # EACCES: the file mode stops nobody


def test_non_root_shim_cannot_connect(agent: AgentHandle, sandbox: str) -> None:
    r = run_cni("ADD", conf("fbridge"), socket=agent.socket, container_id="nobody", netns=f"/run/netns/{sandbox}")
    assert r.code == 0, r.stdout     # root may ...
    run_cni("DEL", conf("fbridge"), socket=agent.socket, container_id="nobody", netns=f"/run/netns/{sandbox}")
    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "nobody", "CNI_IFNAME": "eth0", "CNI_PATH": "/opt/cni/bin",
           "CNI_NETNS": f"/run/netns/{sandbox}", "CLOUDNIC_AGENT_SOCKET": agent.socket}
    p = subprocess.run([str(SHIM)], input=json.dumps(conf("fbridge")).encode(), env=env, capture_output=True,
                       user=NOBODY, group=NOBODY, timeout=30)
    obj = json.loads(p.stdout)
    assert p.returncode == 1 and obj["code"] == 11, obj
    assert "Permission denied" in obj["details"] and agent.socket in obj["details"], obj


def test_peer_credentials_refuse_non_root_cni(agent: AgentHandle, loosened: str, sandbox: str) -> None:
    before = agent.admin({"op": "attachments"})["attachments"]
    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "nobody", "CNI_IFNAME": "eth0", "CNI_PATH": "/opt/cni/bin",
           "CNI_NETNS": f"/run/netns/{sandbox}", "CLOUDNIC_AGENT_SOCKET": loosened}
    p = subprocess.run([str(SHIM)], input=json.dumps(conf("fbridge")).encode(), env=env, capture_output=True,
                       user=NOBODY, group=NOBODY, timeout=30)
    obj = json.loads(p.stdout)
    assert p.returncode == 1 and obj["code"] == 5, obj
    assert "only root" in obj["msg"] and "uid 65534" in obj["details"], obj
    assert agent.admin({"op": "attachments"})["attachments"] == before


def test_peer_credentials_refuse_non_root_admin(agent: AgentHandle, loosened: str) -> None:
    err, frame = as_nobody_admin(loosened)
    assert err == "", err
    reply = wire.decode_admin(frame[8:])
    assert reply == {"error": f"permission denied for uid {NOBODY}"}, reply
    assert agent.admin({"op": "ping"})["ok"]          # root still served


def _call(sock_path: str, frame: bytes) -> wire.Response:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(30)
        s.connect(sock_path)
        try:
            s.sendall(frame)
        except (BrokenPipeError, ConnectionResetError):
            pass              # the agent answered after the header and stopped reading
        data = b""
        try:
            while chunk := s.recv(1 << 20):
                data += chunk
        except ConnectionResetError:
            pass              # after the answer: the agent closed with our unread body in its queue
    return wire.decode_response(data)


def _frame_with_body_of(n: int) -> bytes:
    fields = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "sizes", "CNI_IFNAME": "eth0",
              "cloudnic.request_id": "00000000000000aa"}
    empty = wire.encode_request(fields, b"")
    pad = n - (len(empty) - 8)
    stdin = json.dumps(conf("fbridge")).encode()
    stdin += b" " * (pad - len(stdin))
    frame = wire.encode_request(fields, stdin)
    assert struct.unpack(">I", frame[4:8])[0] == n
    return frame


@pytest.mark.parametrize(("body", "code", "names"), [
    (MAX_REQUEST, 4, "CNI_NETNS"),              # read and decoded: refused for the missing netns
    (MAX_REQUEST + 1, 5, "max_request_bytes"),  # refused right after the header
    (MAX_REQUEST + 4096, 5, "max_request_bytes"),
])
def test_request_size_boundary(agent: AgentHandle, body: int, code: int, names: str) -> None:
    resp = _call(agent.socket, _frame_with_body_of(body))
    obj = json.loads(resp.stdout)
    assert resp.exit_code == 1 and obj["code"] == code and names in obj["msg"], obj
    assert agent.admin({"op": "ping"})["ok"]


def test_oversized_admin_frame_gets_an_admin_reply(agent: AgentHandle) -> None:
    """The CLI reads ADR1 frames: an oversized admin request is refused in its own language."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(30)
        s.connect(agent.socket)
        s.sendall(wire.MAGIC_ADMIN + struct.pack(">I", MAX_REQUEST + 1))
        s.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert data[:4] == wire.MAGIC_ADMIN_REPLY, data[:60]
    reply = wire.decode_admin(data[8:])
    assert reply["ok"] is False and "max_request_bytes" in reply["error"], reply
