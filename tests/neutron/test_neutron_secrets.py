"""Secrets through the whole agent (issue 5, item 5): the real agent process with password auth against the real
Keystone (tests/neutron/keystone_peer.py) and the real neutron-server, driven through the real shim.

* With good credentials, then with Keystone refusing them (a revoked password: Neutron answers 401, keystoneauth
  asks for a new token, Keystone answers 401), and with a wrong password from the start: the password never appears
  in the agent's log file, in any CNI error object, in ``cloudnic status`` (text and --json) or in the admin status.
* A credential file that its group or others may read or write: the agent refuses to start and says which file, its
  mode and the chmod that fixes it (``read_secret_file``, reached through the agent's start-up).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from keystone_peer import KeystonePeer
from outage import NODE, conf
from peer import NeutronPeer, Project, ScratchNet

from tests.support.agent import REPO, AgentHandle, agent_config, start_agent, stop_agent
from tests.support.cni import CNIRun, netns, run_cni
from tests.support.cni import unique as uniq

pytestmark = pytest.mark.neutron


def secret_file(directory: Path, name: str, value: str, mode: int = 0o600) -> Path:
    path = directory / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")
    os.chmod(path, mode)
    return path


def provider_toml(keystone: KeystonePeer, neutron: NeutronPeer, net: ScratchNet, *, password_file: Path | None = None,
                  app_secret_file: Path | None = None) -> str:
    c = keystone.creds
    if app_secret_file is not None:
        auth = (f'auth_type = "v3applicationcredential"\n'
                f'application_credential_id = "{c["application_credential_id"]}"\n'
                f'application_credential_secret_file = "{app_secret_file}"\n')
    else:
        auth = (f'auth_type = "password"\nusername = "{c["username"]}"\npassword_file = "{password_file}"\n'
                f'user_domain_name = "{c["user_domain_name"]}"\nproject_name = "{c["project_name"]}"\n'
                f'project_domain_name = "{c["project_domain_name"]}"\n')
    return f"""
[provider]
type = "neutron"
{auth}auth_url = "{keystone.counted_auth_url}"
endpoint = "{neutron.counting_endpoint.url}"
timeout_s = 20
retries = 1
backoff_base_s = 0.05
backoff_max_s = 0.1
auth_backoff_base_s = 2
auth_backoff_max_s = 4

[networks.npods]
mode = "linuxbridge"
neutron_network = "{net.network_id}"
security_groups = ["{net.security_group_id}"]
"""


@pytest.fixture
def node(neutron: NeutronPeer) -> Iterator[str]:
    neutron.fake_agent(NODE)
    with netns(uniq("cnn-snode-")) as ns:
        yield ns


def config(tmp: Path, node: str, text: str) -> str:
    return agent_config(tmp, text, host_netns=f"/run/netns/{node}").replace('node_name = "test-node"',
                                                                           f'node_name = "{NODE}"')


def cli_status(agent: AgentHandle) -> str:
    out = []
    for extra in ([], ["--json"]):
        p = subprocess.run([sys.executable, "-m", "cloudnic.cli.main", "--socket", agent.socket, "status", *extra],
                           capture_output=True, text=True, cwd=REPO, timeout=60)
        out.append(p.stdout + p.stderr)
    return "\n".join(out)


def leaks(secrets_: list[str], texts: dict[str, str]) -> list[str]:
    """``where: which secret (its length only)`` for every secret found in a text."""
    return [f"{where}: a secret of {len(s)} characters" for where, text in texts.items() for s in secrets_ if s in text]


def test_no_secret_in_log_errors_or_status(keystone: KeystonePeer, neutron: NeutronPeer, neutron_project: Project,
                                           node: str, tmp_path: Path) -> None:
    net = neutron_project.network(cidr="10.77.42.0/24")
    wrong = f"cnn-wrong-{secrets.token_urlsafe(12)}"
    every_secret = [*keystone.secrets, wrong]
    seen: dict[str, str] = {}
    cni_errors: list[CNIRun] = []

    good = secret_file(tmp_path, "password", keystone.creds["password"])
    agent = start_agent(tmp_path / "good", config(tmp_path / "good", node,
                                                  provider_toml(keystone, neutron, net, password_file=good)),
                        timeout=120)
    try:
        with netns(uniq("cnn-ssb-")) as sb:
            ok = run_cni("ADD", conf(), socket=agent.socket, container_id="s1", netns=f"/run/netns/{sb}")
            assert ok.code == 0, ok.stdout + agent.log_text()[-3000:]
            assert keystone.counting.counts().get("POST /v3/auth/tokens") == 1
            seen["status while healthy"] = cli_status(agent) + json.dumps(agent.admin({"op": "status"}))
            # the password is revoked: Neutron refuses the token, Keystone refuses the password
            neutron.counting_endpoint.fail(401)
            keystone.counting.fail(401)
            for i, verb in enumerate(["ADD", "STATUS", "ADD"]):
                r = run_cni(verb, conf(), socket=agent.socket, container_id=f"f{i}", netns=f"/run/netns/{sb}")
                assert r.code != 0, r.stdout
                cni_errors.append(r)
            status = agent.admin({"op": "status"})
            assert status["provider"]["healthy"] is False
            seen["status while refused"] = cli_status(agent) + json.dumps(status)
            neutron.counting_endpoint.up()
            keystone.counting.up()
            # the DEL needs Neutron: it works once the back-off after the 401 (2..4 s here) has ended
            dels = [run_cni("DEL", conf(), socket=agent.socket, container_id="s1", netns=f"/run/netns/{sb}")]
            while dels[-1].code != 0 and len(dels) < 20:
                cni_errors.append(dels[-1])
                time.sleep(0.5)
                dels.append(run_cni("DEL", conf(), socket=agent.socket, container_id="s1", netns=f"/run/netns/{sb}"))
            assert dels[-1].code == 0, dels[-1].stdout
    finally:
        stop_agent(agent)
    refused = cni_errors[0].json
    assert refused["code"] == 103 and keystone.counted_auth_url in refused["msg"], refused
    assert f'user "{keystone.creds["username"]}"' in refused["msg"]
    seen["log, good password"] = agent.log_text()

    bad = secret_file(tmp_path, "wrong-password", wrong)
    with pytest.raises(RuntimeError) as info:       # wrong from the start: the agent says so and stops
        start_agent(tmp_path / "bad", config(tmp_path / "bad", node,
                                             provider_toml(keystone, neutron, net, password_file=bad)), timeout=120)
    assert "authentication" in str(info.value) and keystone.counted_auth_url in str(info.value)
    seen["log, wrong password"] = (tmp_path / "bad" / "agent.log").read_text(errors="replace")
    for i, r in enumerate(cni_errors):
        seen[f"CNI error {i}"] = r.stdout + r.stderr
    assert all(seen.values())
    assert not leaks(every_secret, seen), leaks(every_secret, seen)


@pytest.mark.parametrize(("kind", "mode"), [("password", 0o640), ("password", 0o604), ("appcred", 0o660)])
def test_a_credential_file_others_may_read_stops_the_agent(kind: str, mode: int, keystone: KeystonePeer,
                                                          neutron: NeutronPeer, neutron_project: Project, node: str,
                                                          tmp_path: Path) -> None:
    net = neutron_project.network(cidr="10.77.43.0/24")
    value = keystone.creds["password"] if kind == "password" else keystone.creds["application_credential_secret"]
    path = secret_file(tmp_path, f"{kind}-secret", value, mode)
    key = "password_file" if kind == "password" else "application_credential_secret_file"
    text = provider_toml(keystone, neutron, net, **{"password_file" if kind == "password" else "app_secret_file": path})
    with pytest.raises(RuntimeError) as info:
        start_agent(tmp_path / "a", config(tmp_path / "a", node, text), timeout=60)
    msg = str(info.value)
    assert "exited with 2" in msg, msg
    assert f"provider.{key}: {path} has mode {mode:04o}" in msg and f"chmod 600 {path}" in msg, msg
    assert value not in msg
    assert keystone.counting.counts() == {} and neutron.counting_endpoint.total() == 0  # refused before any call
    os.chmod(path, 0o600)                             # fixed: the same config starts
    agent = start_agent(tmp_path / "a", (tmp_path / "a" / "agent.toml").read_text(), timeout=120)
    try:
        assert agent.admin({"op": "status"})["provider"]["healthy"] is True
    finally:
        stop_agent(agent)
