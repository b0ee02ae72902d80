"""`make demo` leaves nothing behind; `make install` / `make uninstall` are exact inverses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.agent import REPO, SHIM

pytestmark = pytest.mark.functional


def _netns() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def _links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    return {line.split(": ")[1].split("@")[0] for line in out.splitlines()}


def test_demo_runs_and_leaves_nothing_behind() -> None:
    tmp_before = {p.name for p in Path("/tmp").glob("cloudnic-demo-*")}
    ns_before, links_before = _netns(), _links()
    p = subprocess.run([sys.executable, "-m", "cloudnic.cli.main", "demo", "--shim", str(SHIM)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    out = p.stdout
    assert "demo passed" in out and "FAILED" not in out and "LEFT BEHIND" not in out
    assert out.count(": ok") >= 14          # 6 pings, 4 CHECKs, 4 DELs
    assert "10.77.0." in out and "10.78.0." in out
    assert _netns() == ns_before and _links() == links_before
    assert {p.name for p in Path("/tmp").glob("cloudnic-demo-*")} == tmp_before
    assert subprocess.run(["pgrep", "-f", "cloudnic-demo-"], capture_output=True).returncode == 1


@pytest.mark.slow
def test_install_and_uninstall_are_exact_inverses(tmp_path: Path) -> None:
    dest = tmp_path / "root"
    dest.mkdir()
    env = dict(os.environ, DESTDIR=str(dest), CNI_BIN_DIR="/opt/cni/bin")
    subprocess.run(["make", "-s", "install", f"DESTDIR={dest}"], cwd=REPO, env=env, check=True,
                   capture_output=True, timeout=600)
    for path in ("opt/cni/bin/cloudnic", "etc/systemd/system/cloudnic-agent.service", "etc/cloudnic/agent.toml",
                 "etc/cni/net.d/10-cloudnic.conflist", "opt/cloudnic/manifest", "usr/local/sbin/cloudnic"):
        assert (dest / path).exists() or (dest / path).is_symlink(), path
    assert (dest / "etc/cloudnic/agent.toml").stat().st_mode & 0o777 == 0o600
    assert os.readlink(dest / "usr/local/sbin/cloudnic") == "/opt/cloudnic/venv/bin/cloudnic"
    # the installed agent validates the sample config it shipped
    py = dest / "opt/cloudnic/venv/bin/python"
    chk = subprocess.run([str(py), "-m", "cloudnic.agent.main", "--config", str(dest / "etc/cloudnic/agent.toml"),
                          "--check-config"], capture_output=True, text=True)
    assert chk.returncode == 0 and "config ok" in chk.stdout, chk.stderr
    # the installed shim is a static executable that answers VERSION
    v = subprocess.run([str(dest / "opt/cni/bin/cloudnic")], input=b'{"cniVersion":"1.0.0"}',
                       env={"CNI_COMMAND": "VERSION"}, capture_output=True)
    assert v.returncode == 0 and b"1.1.0" in v.stdout
    # an edited config survives a reinstall
    (dest / "etc/cloudnic/agent.toml").write_text((dest / "etc/cloudnic/agent.toml").read_text() + "\n# edited\n")
    subprocess.run(["make", "-s", "install", f"DESTDIR={dest}"], cwd=REPO, env=env, check=True,
                   capture_output=True, timeout=600)
    assert "# edited" in (dest / "etc/cloudnic/agent.toml").read_text()
    subprocess.run(["make", "-s", "uninstall", f"DESTDIR={dest}"], cwd=REPO, env=env, check=True,
                   capture_output=True, timeout=120)
    left = sorted(str(p.relative_to(dest)) for p in dest.rglob("*"))
    # only the kept, edited config (and its directory) remain: uninstall removed exactly what install made
    assert left == ["etc", "etc/cloudnic", "etc/cloudnic/agent.toml"], left
