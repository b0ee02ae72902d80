"""Property-based fuzzing of the real shim executable against one real agent (issue 5 item 3).

Whatever the environment and stdin: the shim never dies of a signal, stdout is empty or exactly one JSON
object (a result, an error, or the VERSION answer), the agent keeps serving, and a refused request leaves
the store and the kernel as they were (an accepted ADD is DELeted with the same input, then the same holds).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.hostile.hostile_case import base
from tests.hostile.hostile_fuzz import count, fuzz_settings, json_values
from tests.hostile.hostile_runner import Bench, assert_serving, bench, one_json_object, snapshot
from tests.support.agent import SHIM, AgentHandle

pytestmark = pytest.mark.functional

COMMANDS = ["ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION", "", "add", "FROB"]
TOP_KEYS = ["cniVersion", "name", "type", "network", "subnet", "mtu", "securityGroups", "runtimeConfig", "args",
            "prevResult", "ipam", "cniVersions", "cni.dev/valid-attachments", "dns", "capabilities"]
RC_KEYS = ["ips", "mac", "portMappings", "bandwidth", "io.kubernetes.cri.pod-annotations", "IPs"]
ODD_TEXT = st.sampled_from(["", ".", "..", "/", "eth0", "lo", "dummy0", "a" * 16, "a b", "x\ny", "ünï", "-rf",
                            "/etc/hostname", "/proc/self/ns/net", "/proc/self/ns/uts", "/dev/null", "/run/netns",
                            "IP=10.91.0.20", "IP=garbage", "MAC=zz", "IgnoreUnknown=1;x", "K8S_POD_NAME=a b",
                            "\udcff", "9" * 30, "0"])


@pytest.fixture(scope="module")
def hb(agent: AgentHandle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bench]:
    with bench(agent, tmp_path_factory.mktemp("fuzz-shim")) as b:
        yield b


def cni_env(b: Bench, command: str, container_id: str = "fuzz") -> dict[str, str]:
    return {"CNI_COMMAND": command, "CNI_CONTAINERID": container_id, "CNI_IFNAME": "eth0",
            "CNI_PATH": "/opt/cni/bin", "CNI_NETNS": f"/run/netns/{b.sandbox}", "CLOUDNIC_AGENT_SOCKET": b.agent.socket}


def shim(env: dict[str, str], stdin: bytes) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([str(SHIM)], input=stdin, env=env, capture_output=True, timeout=60)


def check_run(b: Bench, env: dict[str, str], stdin: bytes, name: str) -> None:
    """Run once and assert the properties; an accepted ADD is undone with a DEL of the same input."""
    count(name)
    before = snapshot(b)
    p = shim(env, stdin)
    assert p.returncode >= 0, f"the shim died of signal {-p.returncode}"
    out = p.stdout.decode("utf-8")                      # stdout is always UTF-8 JSON (or nothing)
    obj = one_json_object(out) if out else None
    assert b"Traceback" not in p.stdout + p.stderr
    if p.returncode == 0:
        assert obj is None or "code" not in obj, obj
        if env.get("CNI_COMMAND") == "ADD":
            undo = shim(dict(env, CNI_COMMAND="DEL"), stdin)
            assert undo.returncode == 0, f"ADD accepted but the same DEL is refused: {undo.stdout!r}"
    else:
        assert p.returncode == 1 and obj is not None and isinstance(obj.get("code"), int), out
        assert isinstance(obj.get("msg"), str) and obj["msg"], obj
    assert_serving(b.agent)
    assert snapshot(b) == before, f"store or kernel changed: env={env!r} stdin={stdin[:300]!r} -> {out[:300]!r}"


def keep_holder(conf: dict[str, Any]) -> dict[str, Any]:
    """A GC without "cni.dev/valid-attachments" releases every attachment (as libcni means it): list the
    holder's, so that a fuzzed GC leaves the state alone."""
    return dict(conf, **{"cni.dev/valid-attachments": [{"containerID": "holder", "ifname": "eth0"}]})


env_dicts = st.dictionaries(
    st.sampled_from(["CNI_COMMAND", "CNI_CONTAINERID", "CNI_IFNAME", "CNI_NETNS", "CNI_ARGS", "CNI_PATH",
                     "CNI_EXTRA", "CLOUDNIC_TIMEOUT_MS"]),
    ODD_TEXT | st.text(alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\0"),
                       max_size=60),
    max_size=8,
)


@fuzz_settings()
@given(command=st.sampled_from(COMMANDS), overrides=env_dicts, drop=st.sets(st.sampled_from(
    ["CNI_COMMAND", "CNI_CONTAINERID", "CNI_IFNAME", "CNI_NETNS", "CNI_PATH"]), max_size=3))
def test_fuzz_env(hb: Bench, command: str, overrides: dict[str, str], drop: set[str]) -> None:
    env = cni_env(hb, command)
    env.update(overrides)
    for k in drop:
        env.pop(k, None)
    if env.get("CNI_CONTAINERID") == "holder":
        env["CNI_CONTAINERID"] = "not-holder"
    if "CLOUDNIC_TIMEOUT_MS" in env:       # a short timeout would leave the agent working after the shim left
        env["CLOUDNIC_TIMEOUT_MS"] = "x" + env["CLOUDNIC_TIMEOUT_MS"]
    check_run(hb, env, json.dumps(keep_holder(base())).encode(), "fuzz_env")


def mutate(conf: dict[str, Any], edits: list[tuple[str, str, Any]]) -> dict[str, Any]:
    out = json.loads(json.dumps(conf))
    for where, key, value in edits:
        target = out
        if where == "rc":
            rc = out.setdefault("runtimeConfig", {})
            if not isinstance(rc, dict):
                continue
            target = rc
        if value is _DELETE:
            target.pop(key, None)
        else:
            target[key] = value
    return out


_DELETE = object()
edits = st.lists(st.tuples(st.sampled_from(["top", "rc"]), st.sampled_from(TOP_KEYS + RC_KEYS),
                           st.just(_DELETE) | json_values), min_size=1, max_size=4)


@fuzz_settings()
@given(command=st.sampled_from(["ADD", "ADD", "CHECK", "DEL", "GC", "STATUS"]), changes=edits)
def test_fuzz_config_mutations(hb: Bench, command: str, changes: list[tuple[str, str, Any]]) -> None:
    conf = keep_holder(mutate(base(), changes))
    check_run(hb, cni_env(hb, command), json.dumps(conf).encode(), "fuzz_config")


def byte_mutations(data: bytes) -> st.SearchStrategy[bytes]:
    def apply(ops: list[tuple[int, int, bytes]]) -> bytes:
        out = bytearray(data)
        for kind, where, chunk in ops:
            pos = where % (len(out) + 1)
            if kind == 0:
                out[pos:pos + len(chunk)] = chunk             # overwrite
            elif kind == 1:
                out[pos:pos] = chunk                          # insert
            else:
                del out[pos:pos + max(1, len(chunk))]         # delete
        return bytes(out)
    return st.lists(st.tuples(st.integers(0, 2), st.integers(0, 10_000), st.binary(min_size=1, max_size=8)),
                    min_size=1, max_size=6).map(apply)


raw_stdin = (st.binary(max_size=300) | byte_mutations(json.dumps(base()).encode())
             | st.sampled_from([b"", b"\xef\xbb\xbf{}", b"[" * 5000, b"{" * 5000, b"\x00" * 64, b"null"]))


@fuzz_settings()
@given(command=st.sampled_from(["ADD", "CHECK", "DEL", "STATUS", "VERSION"]), stdin=raw_stdin)
def test_fuzz_stdin_bytes(hb: Bench, command: str, stdin: bytes) -> None:
    check_run(hb, cni_env(hb, command), stdin, "fuzz_stdin")


def test_fuzz_helpers_apply() -> None:
    """The mutation helper really mutates (a fuzzer that sends the same valid input proves nothing)."""
    c = mutate(base(), [("top", "mtu", "x"), ("rc", "ips", [5]), ("top", "name", _DELETE)])
    assert c["mtu"] == "x" and c["runtimeConfig"] == {"ips": [5]} and "name" not in c
