"""The real `cloudnic` executable (shim/cloudnic.c) against a scripted fake agent.

The shim is built once per session with `make -C shim`; a representative subset also
runs against the AddressSanitizer/UBSan build, asserting the sanitizers stay silent.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudnic.agent import wire

try:
    from .fake_agent import Close, FakeAgent, Hang, Raw, Respond
except ImportError:
    from fake_agent import Close, FakeAgent, Hang, Raw, Respond  # type: ignore[no-redef]

pytestmark = pytest.mark.functional

SHIM_DIR = Path(__file__).resolve().parents[2] / "shim"
SUPPORTED = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
ERROR_KEYS = {"cniVersion", "code", "msg", "details"}
SANITIZER_MARKS = ("AddressSanitizer", "LeakSanitizer", "UndefinedBehaviorSanitizer", "runtime error:")
STDIN_MAX = 16 << 20


@dataclass(frozen=True)
class Shim:
    path: Path
    asan: bool


@dataclass(frozen=True)
class Result:
    code: int
    stdout: bytes
    stderr: bytes
    elapsed: float

    def json(self) -> dict[str, object]:
        """stdout must be exactly one JSON object (json.loads refuses trailing data)."""
        obj = json.loads(self.stdout)
        assert isinstance(obj, dict), self.stdout
        return obj

    def error(self, code: int) -> dict[str, object]:
        assert self.code == 1, (self.code, self.stdout, self.stderr)
        obj = self.json()
        assert set(obj) == ERROR_KEYS, obj
        assert obj["code"] == code, obj
        assert isinstance(obj["msg"], str) and obj["msg"]
        assert self.stderr.startswith(b"cloudnic["), self.stderr
        return obj


def _make(target: str) -> Path:
    proc = subprocess.run(
        ["make", "-C", str(SHIM_DIR), target], check=False, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, f"make {target} failed:\n{proc.stdout}\n{proc.stderr}"
    return SHIM_DIR / "build" / ("cloudnic" if target == "all" else "cloudnic-asan")


@pytest.fixture(scope="session")
def shim_static() -> Shim:
    return Shim(_make("all"), asan=False)


@pytest.fixture(scope="session")
def shim_asan() -> Shim:
    return Shim(_make("asan"), asan=True)


@pytest.fixture(params=["static", "asan"])
def shim(request: pytest.FixtureRequest) -> Shim:
    """The subset of tests that runs against both builds."""
    return request.getfixturevalue(f"shim_{request.param}")


def run(
    binary: Shim, env: dict[str, str] | dict[bytes, bytes], stdin: bytes = b"", timeout: float = 30
) -> Result:
    full: dict[bytes, bytes] = {os.fsencode(k): os.fsencode(v) for k, v in env.items()}
    if binary.asan:
        full[b"ASAN_OPTIONS"] = b"detect_leaks=1:halt_on_error=1:abort_on_error=0"
        full[b"UBSAN_OPTIONS"] = b"halt_on_error=1:print_stacktrace=1"
    start = time.monotonic()
    proc = subprocess.run(
        [str(binary.path)], input=stdin, env=full, capture_output=True, timeout=timeout, check=False
    )
    result = Result(proc.returncode, proc.stdout, proc.stderr, time.monotonic() - start)
    assert result.code >= 0, f"shim killed by signal {-result.code}: {proc.stderr!r}"
    if binary.asan:
        text = proc.stderr.decode(errors="replace")
        assert not any(mark in text for mark in SANITIZER_MARKS), text
    return result


@pytest.fixture
def sock_path(tmp_path: Path) -> str:
    return str(tmp_path / "agent.sock")


@pytest.fixture
def agent(sock_path: str) -> Iterator[FakeAgent]:
    with FakeAgent(sock_path) as fake:
        yield fake


def cni_env(sock_path: str, command: str = "ADD", **extra: str) -> dict[str, str]:
    return {"CNI_COMMAND": command, "CLOUDNIC_AGENT_SOCKET": sock_path, **extra}


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"cns-{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)
        assert not Path(f"/run/netns/{name}").exists()


# ---- forwarding --------------------------------------------------------------------------


def test_forwards_env_stdin_and_request_id_byte_exact(shim: Shim, agent: FakeAgent, sock_path: str) -> None:
    agent.action = Respond(0, b'{"cniVersion":"1.1.0","ips":[]}', b"agent says hi\n")
    env = {
        **cni_env(sock_path, CLOUDNIC_TIMEOUT_MS="4321"),
        "CNI_CONTAINERID": "c0ffee-123",
        "CNI_IFNAME": "eth0",
        "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAME=a b;IP=10.1.2.3 \t é ✓ = ;",
        "CNI_PATH": "/opt/cni/bin",
        "CNI_EMPTY": "",
        "NOT_CNI": "x",
        "cni_lower": "y",
    }
    stdin = b'{"cniVersion":"1.1.0","name":"n"}\n\x00\xff binary tail'
    first = run(shim, env, stdin)
    assert run(shim, env, stdin).code == 0
    assert (first.code, first.stdout, first.stderr) == (
        0,
        b'{"cniVersion":"1.1.0","ips":[]}',
        b"agent says hi\n",
    )
    assert len(agent.received) == 2
    got = agent.received[0]
    assert got.stdin == stdin
    assert got.netns is None
    ids = [r.fields.pop("cloudnic.request_id") for r in agent.received]
    assert all(re.fullmatch(r"[0-9a-f]{16}", i) for i in ids) and ids[0] != ids[1]
    expected = {k: v for k, v in env.items() if k.startswith("CNI_")}
    expected |= {"cloudnic.timeout_ms": "4321", "cloudnic.shim_version": "1"}
    assert got.fields == expected


def test_netns_descriptor_is_the_same_namespace(
    shim: Shim, agent: FakeAgent, sock_path: str, netns: str
) -> None:
    path = f"/run/netns/{netns}"
    result = run(shim, cni_env(sock_path, CNI_NETNS=path, CNI_CONTAINERID="x", CNI_IFNAME="eth0"), b"{}")
    assert result.code == 0
    (got,) = agent.received
    st = os.stat(path)
    assert got.netns == (st.st_dev, st.st_ino)
    assert got.fields["cloudnic.netns"] == "fd"
    assert got.fields["CNI_NETNS"] == path


@pytest.mark.parametrize("command", ["DEL", "ADD"])
def test_missing_netns_reports_errno(
    shim_static: Shim, agent: FakeAgent, sock_path: str, command: str
) -> None:
    missing = f"/run/netns/cns-missing-{secrets.token_hex(4)}"
    assert run(shim_static, cni_env(sock_path, command, CNI_NETNS=missing), b"{}").code == 0
    (got,) = agent.received
    assert got.fields["cloudnic.netns"] == "errno:2"
    assert got.netns is None


def test_empty_netns_sends_no_netns_field(shim_static: Shim, agent: FakeAgent, sock_path: str) -> None:
    assert run(shim_static, cni_env(sock_path, "DEL", CNI_NETNS=""), b"{}").code == 0
    (got,) = agent.received
    assert "cloudnic.netns" not in got.fields
    assert got.fields["CNI_NETNS"] == ""


def test_default_timeout_field(shim_static: Shim, agent: FakeAgent, sock_path: str) -> None:
    assert run(shim_static, cni_env(sock_path, "GC"), b"{}").code == 0
    assert agent.received[0].fields["cloudnic.timeout_ms"] == "90000"


@pytest.mark.parametrize(
    ("exit_code", "shim_exit"), [(0, 0), (3, 3), (7, 7), (255, 255), (256, 255), (0xFFFFFFFF, 255)]
)
def test_relays_exit_code(
    shim_static: Shim, agent: FakeAgent, sock_path: str, exit_code: int, shim_exit: int
) -> None:
    agent.action = Respond(exit_code, b'{"code":7}', b"")
    result = run(shim_static, cni_env(sock_path), b"{}")
    assert (result.code, result.stdout, result.stderr) == (shim_exit, b'{"code":7}', b"")


def test_relays_large_stdout_and_stderr(shim: Shim, agent: FakeAgent, sock_path: str) -> None:
    out, err = os.urandom(3 << 20), os.urandom(1 << 20)
    agent.action = Respond(0, out, err)
    result = run(shim, cni_env(sock_path, "CHECK"), b"{}")
    assert result.code == 0
    assert result.stdout == out
    assert result.stderr.endswith(err)  # ASan may not add anything, but stay tolerant of a prefix


def test_exactly_16_mib_of_stdin_is_forwarded(shim_static: Shim, agent: FakeAgent, sock_path: str) -> None:
    stdin = b"{" + b" " * (STDIN_MAX - 2) + b"}"
    assert run(shim_static, cni_env(sock_path), stdin).code == 0
    assert agent.received[0].stdin == stdin


def test_early_answer_is_relayed_while_still_sending(shim: Shim, sock_path: str) -> None:
    """The agent refuses a too-large body after the header; the shim must still relay that answer."""
    refusal = b'{"cniVersion":"1.1.0","code":5,"msg":"request too large"}'
    with FakeAgent(sock_path, max_body=64 << 10) as fake:
        fake.on_error = Respond(1, refusal)
        result = run(shim, cni_env(sock_path), b"{" + b" " * (8 << 20) + b"}")
        assert fake.received[0].error == "too_large"
    assert (result.code, result.stdout) == (1, refusal)


# ---- what the shim answers alone ---------------------------------------------------------


VERSION_CASES = [
    (b'{"cniVersion":"0.4.0"}', "0.4.0"),
    (b'  {\n  "name": "x",\n  "cniVersion" :\t"1.0.0" }\n', "1.0.0"),
    (b'{"cniVersion":"0.3.1","cniVersion":"1.0.0"}', "1.0.0"),
    (b'{"cniVersion":"0.3.1","cniVersion":5}', "1.1.0"),
    (b'{"plugins":[{"cniVersion":"0.3.0"}],"name":"x"}', "1.1.0"),
    (b'{"a":{"cniVersion":"0.3.0"},"cniVersion":"0.4.0"}', "0.4.0"),
    (b'{"a":"\\"cniVersion\\":\\"0.3.0\\"","b":1}', "1.1.0"),
    (b'{"x":"cniVersion","y":"0.3.0"}', "1.1.0"),
    (b'{"cniVersion":"1.0.0"', "1.1.0"),
    (b'{"cniVersion":"1.0.0-rc1"}', "1.1.0"),
    (b'{"cniVersion":"v1.0.0"}', "1.1.0"),
    (b'{"cniVersion":"12345678901234567"}', "1.1.0"),
    (b'{"cniVersion":""}', "1.1.0"),
    (b'{"cniVersion":null}', "1.1.0"),
    (b'{"cniVersion":"1.0.0\\u0000"}', "1.1.0"),
    (b'{"cniVersion":"1.0.0\\"}', "1.1.0"),
    (b'["cniVersion","1.0.0"]', "1.1.0"),
    (b'"cniVersion":"1.0.0"', "1.1.0"),
    (b"", "1.1.0"),
    (b"\xff\xfe\x00garbage{{{[[[", "1.1.0"),
    (b"{" * 100000, "1.1.0"),
    (b'{"cniVersion":"0.3.1"}' + b"}" * 10, "0.3.1"),
]


@pytest.mark.parametrize(("stdin", "version"), VERSION_CASES)
def test_version_answered_alone(shim_static: Shim, sock_path: str, stdin: bytes, version: str) -> None:
    result = run(shim_static, cni_env(sock_path, "VERSION"), stdin)  # no agent listening
    assert result.code == 0
    assert result.json() == {"cniVersion": version, "supportedVersions": SUPPORTED}
    assert result.stderr == b""


def test_version_under_asan(shim_asan: Shim, sock_path: str) -> None:
    for stdin, version in VERSION_CASES:
        result = run(shim_asan, cni_env(sock_path, "VERSION"), stdin)
        assert result.json()["cniVersion"] == version


@pytest.mark.parametrize("command", [None, "", "add", "FOO", "VERSION ", "ADD\n"])
def test_bad_command_is_code_4_without_agent_contact(
    shim: Shim, agent: FakeAgent, sock_path: str, command: str | None
) -> None:
    env = cni_env(sock_path)
    if command is None:
        del env["CNI_COMMAND"]
    else:
        env["CNI_COMMAND"] = command
    err = run(shim, env, b'{"cniVersion":"0.4.0"}').error(4)
    assert "CNI_COMMAND" in str(err["msg"])
    assert err["cniVersion"] == "0.4.0"
    assert agent.received == []


@pytest.mark.parametrize("name", ["CLOUDNIC_TIMEOUT_MS", "CLOUDNIC_CONNECT_TIMEOUT_MS"])
@pytest.mark.parametrize("value", ["abc", "0", "-1", "1.5", "99999999999", "86400001", " 5"])
def test_invalid_timeout_env_is_code_4(
    shim_static: Shim, agent: FakeAgent, sock_path: str, name: str, value: str
) -> None:
    err = run(shim_static, {**cni_env(sock_path), name: value}, b"{}").error(4)
    assert name in str(err["msg"])
    assert agent.received == []


@pytest.mark.parametrize(
    ("command", "code"), [("ADD", 11), ("DEL", 11), ("CHECK", 11), ("GC", 11), ("STATUS", 50)]
)
def test_no_agent_socket(shim: Shim, sock_path: str, command: str, code: int) -> None:
    err = run(shim, cni_env(sock_path, command), b'{"cniVersion":"1.0.0"}').error(code)
    assert err["cniVersion"] == "1.0.0"
    assert sock_path in str(err["details"])
    assert "No such file or directory" in str(err["details"])


def test_socket_path_is_not_a_socket(shim_static: Shim, tmp_path: Path) -> None:
    path = tmp_path / "plain-file"
    path.write_text("")
    err = run(shim_static, cni_env(str(path)), b"{}").error(11)
    assert "Connection refused" in str(err["details"])


def test_default_socket_path(shim_static: Shim) -> None:
    default = Path("/run/cloudnic/agent.sock")
    result = run(shim_static, {"CNI_COMMAND": "STATUS"}, b"{}")
    if default.exists():  # a real agent is serving there: the shim must have reached it
        assert result.code == 0 or result.json()["code"] != 50 or "No such file" not in result.stdout.decode()
    else:
        err = result.error(50)
        assert str(default) in str(err["details"])


@pytest.mark.parametrize(
    "name",
    ['a"b', "back\\slash", "new\nline", "ctl\x01\x1f\x7f", "tab\tand ü ✓", "x" * 150, b"bad-\xff\xc3(-utf8"],
)
def test_weird_socket_paths_are_json_escaped(shim: Shim, tmp_path: Path, name: str | bytes) -> None:
    path = os.fsencode(tmp_path) + b"/" + (name if isinstance(name, bytes) else name.encode())
    err = run(shim, {b"CNI_COMMAND": b"ADD", b"CLOUDNIC_AGENT_SOCKET": path}, b"{}").error(11)
    if isinstance(name, str) and len(path) < 108:
        assert path.decode() in str(err["details"])
    if len(path) >= 108:
        assert "too long" in str(err["msg"])


def test_huge_stdin_is_code_5_without_agent_contact(shim: Shim, agent: FakeAgent, sock_path: str) -> None:
    stdin = b'{"cniVersion":"0.4.0","pad":"' + b"x" * STDIN_MAX + b'"}'
    err = run(shim, cni_env(sock_path), stdin).error(5)
    assert "16 MiB" in str(err["msg"])
    assert agent.received == []


# ---- agent failures ------------------------------------------------------------------------


@pytest.fixture
def full_backlog(sock_path: str) -> Iterator[str]:
    """A listening socket that never accepts, with its backlog already full."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    clients: list[socket.socket] = []
    try:
        server.bind(sock_path)
        server.listen(0)
        for _ in range(64):
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            client.setblocking(False)
            clients.append(client)
            try:
                client.connect(sock_path)
            except BlockingIOError:
                break
        else:
            pytest.fail("could not fill the listen backlog")
        yield sock_path
    finally:
        for client in clients:
            client.close()
        server.close()


@pytest.mark.parametrize(("command", "code"), [("ADD", 11), ("STATUS", 50)])
def test_connect_timeout(shim: Shim, full_backlog: str, command: str, code: int) -> None:
    env = cni_env(full_backlog, command, CLOUDNIC_CONNECT_TIMEOUT_MS="300", CLOUDNIC_TIMEOUT_MS="10000")
    result = run(shim, env, b"{}")
    err = result.error(code)
    assert "timed out connecting" in str(err["msg"])
    assert full_backlog in str(err["details"]) and "timed out" in str(err["details"])
    assert 0.28 <= result.elapsed < 2.5


@pytest.mark.parametrize(("command", "code"), [("DEL", 11), ("STATUS", 50)])
def test_total_timeout_when_agent_hangs(
    shim: Shim, agent: FakeAgent, sock_path: str, command: str, code: int
) -> None:
    agent.action = Hang()
    result = run(shim, cni_env(sock_path, command, CLOUDNIC_TIMEOUT_MS="500"), b"{}")
    err = result.error(code)
    assert "within 500 ms" in str(err["msg"])
    assert sock_path in str(err["details"])
    assert 0.45 <= result.elapsed < 3.0
    assert len(agent.received) == 1


def test_total_timeout_when_agent_never_reads(shim_static: Shim, agent: FakeAgent, sock_path: str) -> None:
    agent.action = Hang(read_first=False)
    result = run(shim_static, cni_env(sock_path, CLOUDNIC_TIMEOUT_MS="600"), b"{" + b" " * (4 << 20) + b"}")
    result.error(11)
    assert 0.55 <= result.elapsed < 3.0


@pytest.mark.parametrize("read_first", [True, False])
def test_agent_closes_early(shim: Shim, agent: FakeAgent, sock_path: str, read_first: bool) -> None:
    agent.action = Close(read_first=read_first)
    err = run(shim, cni_env(sock_path), b"{}").error(11)
    assert "closed the connection" in str(err["msg"])
    assert sock_path in str(err["details"])


def u32(n: int) -> bytes:
    return struct.pack(">I", n)


MALFORMED_RESPONSES = {
    "bad_magic": b"HTTP/1.1 200 OK\r\n\r\n",
    "short_body_len": b"CNR1" + u32(11) + b"\0" * 11,
    "body_too_large": b"CNR1" + u32((16 << 20) + 1),
    "stdout_len_too_big": b"CNR1" + u32(12) + u32(0) + u32(1) + u32(0),
    "stderr_len_mismatch": b"CNR1" + u32(14) + u32(0) + u32(1) + b"x" + u32(0) + b"y",
    "truncated_header": b"CNR",
    "truncated_body": b"CNR1" + u32(100) + u32(0),
}


@pytest.mark.parametrize("name", sorted(MALFORMED_RESPONSES))
def test_malformed_response_is_code_11(shim: Shim, agent: FakeAgent, sock_path: str, name: str) -> None:
    agent.action = Raw(MALFORMED_RESPONSES[name])
    err = run(shim, cni_env(sock_path, "CHECK"), b"{}").error(11)
    assert sock_path in str(err["details"])
    assert "malformed" in str(err["msg"]) or "closed the connection" in str(err["msg"])


def test_malformed_response_on_status_is_code_50(shim_static: Shim, agent: FakeAgent, sock_path: str) -> None:
    agent.action = Raw(b"garbage!" * 4)
    run(shim_static, cni_env(sock_path, "STATUS"), b"{}").error(50)


# ---- fuzz ---------------------------------------------------------------------------------

env_text = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=40)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
versions = st.sampled_from(["1.0.0", "0.4.0", "1.1.0", "", "1.0.0-rc", "9" * 20, "1..0"]) | st.text(
    max_size=8
)
configs = st.builds(
    lambda base, version, use, indent: json.dumps(
        {**base, "cniVersion": version} if use else base, indent=indent
    ),
    st.dictionaries(st.text(max_size=10), json_values, max_size=5),
    versions | json_values,
    st.booleans(),
    st.sampled_from([None, 2]),
)


def reference_version(stdin: bytes) -> str:
    obj = json.loads(stdin)
    value = obj.get("cniVersion") if isinstance(obj, dict) else None
    if isinstance(value, str) and re.fullmatch(r"[0-9][0-9.]{0,15}", value):
        return value
    return "1.1.0"


@pytest.fixture(scope="module")
def fuzz_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeAgent]:
    with FakeAgent(str(tmp_path_factory.mktemp("fuzz") / "agent.sock")) as fake:
        yield fake


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(config=configs)
def test_fuzz_version_matches_a_json_parser(shim_static: Shim, config: str) -> None:
    result = run(shim_static, {"CNI_COMMAND": "VERSION"}, config.encode())
    assert result.code == 0
    assert result.json()["cniVersion"] == reference_version(config.encode())


fuzz_env = st.fixed_dictionaries(
    {
        "CNI_COMMAND": st.sampled_from(["ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION", "", "add", "ADDD"])
        | env_text,
        "CNI_NETNS": st.sampled_from(["", "/nonexistent/netns", "/proc/self/ns/net", "relative"]),
    },
    optional={
        "CLOUDNIC_TIMEOUT_MS": st.sampled_from(["1", "100", "0", "-3", "x"]) | env_text,
        "CLOUDNIC_CONNECT_TIMEOUT_MS": st.sampled_from(["1", "100", "0", "-3", "x"]) | env_text,
    },
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    stdin=st.binary(max_size=2048)
    | configs.map(str.encode)
    | configs.map(lambda c: c.encode()[: len(c) // 2]),
    env=fuzz_env,
    extra=st.dictionaries(st.from_regex(r"CNI_[A-Z_]{0,12}", fullmatch=True), env_text, max_size=6),
)
def test_fuzz_never_crashes(
    shim_static: Shim,
    tmp_path_factory: pytest.TempPathFactory,
    stdin: bytes,
    env: dict[str, str],
    extra: dict[str, str],
) -> None:
    sock = str(tmp_path_factory.getbasetemp() / "no-agent-here.sock")
    result = run(shim_static, {**extra, **env, "CLOUDNIC_AGENT_SOCKET": sock}, stdin, timeout=10)
    assert result.code in (0, 1)
    obj = result.json()
    if result.code == 0:
        assert env["CNI_COMMAND"] == "VERSION" and obj["supportedVersions"] == SUPPORTED
    else:
        assert set(obj) == ERROR_KEYS and obj["code"] in (4, 11, 50)


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    """Mostly CNR1 frames, some well formed, some with lengths off by a little or cut short."""
    if draw(st.integers(0, 4)) == 0:
        return draw(st.binary(max_size=40))
    out, err = draw(st.binary(max_size=64)), draw(st.binary(max_size=64))
    out_len = max(len(out) + draw(st.sampled_from([0, 0, 0, -1, 1, 3])), 0)
    body = u32(draw(st.integers(0, 0xFFFFFFFF))) + u32(out_len) + out + u32(len(err)) + err
    body_len = max(len(body) + draw(st.sampled_from([0, 0, 0, -2, -1, 1, 2])), 0)
    data = draw(st.sampled_from([b"CNR1", b"CNR1", b"CNR1", b"CNR2", b"ADR1"])) + u32(body_len) + body
    return data[: max(len(data) - draw(st.sampled_from([0, 0, 0, 1, 5])), 0)]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=frames())
def test_fuzz_responses_match_the_python_decoder(
    shim_static: Shim, fuzz_agent: FakeAgent, data: bytes
) -> None:
    fuzz_agent.action = Raw(data)
    result = run(shim_static, cni_env(fuzz_agent.path, CLOUDNIC_TIMEOUT_MS="5000"), b"{}", timeout=10)
    expected: wire.Response | None = None
    if len(data) >= 8 and len(data) >= 8 + struct.unpack(">I", data[4:8])[0]:
        with contextlib.suppress(wire.WireError):
            expected = wire.decode_response(data[: 8 + struct.unpack(">I", data[4:8])[0]])
    if expected is None:
        result.error(11)
    else:
        assert result.code == min(expected.exit_code, 255)
        assert (result.stdout, result.stderr) == (expected.stdout, expected.stderr)


# ---- the agent socket from the config -------------------------------------------------


def test_config_agent_socket_wins_over_env(shim: Shim, agent: FakeAgent, sock_path: str, tmp_path: Path) -> None:
    agent.action = Respond(0, b'{"cniVersion":"1.0.0"}', b"")
    conf = json.dumps({"cniVersion": "1.0.0", "name": "n", "agentSocket": sock_path}).encode()
    env = cni_env(str(tmp_path / "elsewhere.sock"))
    result = run(shim, env, conf)
    assert result.code == 0 and result.stdout == b'{"cniVersion":"1.0.0"}'
    # without the env variable at all (podman's cleanup process scrubs the environment)
    result = run(shim, {"CNI_COMMAND": "DEL"}, conf)
    assert result.code == 0


@pytest.mark.parametrize("value", ["relative/agent.sock", "", "/esc\\u0061ped.sock", 5, ["/x"]])
def test_unusable_config_agent_socket_falls_back_to_env(
    shim_static: Shim, agent: FakeAgent, sock_path: str, value: object
) -> None:
    agent.action = Respond(0, b"{}", b"")
    conf = json.dumps({"cniVersion": "1.0.0", "agentSocket": value}).encode()
    assert run(shim_static, cni_env(sock_path), conf).code == 0


def test_nested_agent_socket_is_ignored(shim_static: Shim, agent: FakeAgent, sock_path: str, tmp_path: Path) -> None:
    agent.action = Respond(0, b"{}", b"")
    conf = json.dumps({"cniVersion": "1.0.0", "x": {"agentSocket": str(tmp_path / "nope.sock")}}).encode()
    assert run(shim_static, cni_env(sock_path), conf).code == 0
