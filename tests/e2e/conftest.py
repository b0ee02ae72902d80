"""Fixtures for the e2e tests: the real CNI callers around the real shim and agent.

Session: ``e2e`` runs scripts/e2e-setup.sh once (cached under /var/tmp/cloudnic-e2e) and at the
end removes every ``cne-*`` netns, link and libcni cache entry. ``agent`` is one agent serving
one network per test module. Each peer fixture (``cnitool``, ``podman``, ``containerd``) cleans
up what it created, even when a test fails. Every test checks that net.ipv4.ip_forward is
untouched.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # the e2e_* helper modules

from e2e_peers import Cnitool, Containerd, E2EEnv, Podman, conflist
from e2e_util import NETWORKS, cleanup_kernel, networks_toml, read_sysctl, run

REPO = Path(__file__).resolve().parents[2]
E2E_DIR = Path(os.environ.get("CLOUDNIC_E2E_DIR", "/var/tmp/cloudnic-e2e"))
SHIM = REPO / "shim" / "build" / "cloudnic"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """On failure, attach the tail of the agent's and containerd's logs to the report."""
    report = yield
    if report.failed:
        for name, value in getattr(item, "funcargs", {}).items():
            log = getattr(value, "log_path", None)
            if log and Path(log).is_file():
                tail = Path(log).read_text(errors="replace").splitlines()[-40:]
                report.sections.append((f"{name} log tail ({log})", "\n".join(tail)))
    return report


# ---- session -------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def e2e() -> Iterator[E2EEnv]:
    if os.geteuid() != 0:
        pytest.fail("the e2e tests need root (network namespaces, podman, containerd); run them as root")
    env_file = dict(os.environ, CLOUDNIC_E2E_DIR=str(E2E_DIR))
    # leftovers of an earlier run that was killed: containers, containerd, the agent, netns, links
    subprocess.run([str(REPO / "scripts" / "e2e-teardown.sh")], env=env_file, timeout=120, check=False)
    proc = subprocess.run(
        [str(REPO / "scripts" / "e2e-setup.sh")],
        env=env_file,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(f"scripts/e2e-setup.sh failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    yield E2EEnv.load(E2E_DIR / "env.json")
    left = cleanup_kernel()
    # the rest: podman leftovers, a containerd still running, portmap's empty top-level chain
    subprocess.run([str(REPO / "scripts" / "e2e-teardown.sh")], env=env_file, timeout=120, check=False)
    assert not left, f"the e2e tests left these behind (now removed): {left}"


@pytest.fixture(autouse=True)
def _ip_forward_untouched() -> Iterator[None]:
    before = read_sysctl("net.ipv4.ip_forward")
    yield
    after = read_sysctl("net.ipv4.ip_forward")
    if after != before:
        Path("/proc/sys/net/ipv4/ip_forward").write_text(before)
        pytest.fail(f"net.ipv4.ip_forward changed from {before} to {after} during the test (reset)")


@pytest.fixture(scope="session")
def shim(e2e: E2EEnv) -> Path:
    if not os.access(SHIM, os.X_OK):
        pytest.fail(f"{SHIM} is missing: build the shim with `make -C shim`")
    return SHIM


@pytest.fixture(scope="session")
def agent(e2e: E2EEnv, shim: Path) -> Iterator[Any]:
    """One cloudnic agent in the host netns serving the NETWORKS above; bridges removed after."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from tests.support.agent import running_agent

    # a fixed directory, so that scripts/e2e-teardown.sh finds an agent left by a killed run
    shutil.rmtree(e2e.agent_dir, ignore_errors=True)
    pid_file = e2e.dir / "agent.pid"
    try:
        with running_agent(e2e.agent_dir, networks_toml()) as handle:
            pid_file.write_text(str(handle.proc.pid))  # for scripts/e2e-teardown.sh after a kill -9
            yield handle
    finally:
        pid_file.unlink(missing_ok=True)
        for _net, bridge, _cidr, _gw in NETWORKS.values():
            run(["ip", "link", "delete", "dev", bridge], check=False)


# ---- peers ---------------------------------------------------------------------------------------


@pytest.fixture
def cnitool(e2e: E2EEnv, agent: Any, tmp_path: Path) -> Iterator[Cnitool]:
    conf_dir = tmp_path / "net.d"
    conf_dir.mkdir()
    yield Cnitool(e2e, conf_dir, agent.env)


@pytest.fixture
def podman(e2e: E2EEnv, agent: Any) -> Iterator[Podman]:
    driver = Podman(e2e, agent.env)
    try:
        yield driver
    finally:
        driver.close()


@pytest.fixture(scope="module")
def containerd(e2e: E2EEnv, agent: Any) -> Iterator[Containerd]:
    """containerd whose only conflist is cloudnic on network cne-cri, with pod annotations."""
    net = NETWORKS["cri"][0]
    conf = conflist(
        "cne-cri",
        [
            {
                "type": "cloudnic",
                "network": net,
                "capabilities": {"io.kubernetes.cri.pod-annotations": True, "portMappings": True},
            }
        ],
    )
    driver = Containerd(e2e, conf, agent.env)
    try:
        driver.start()
        yield driver
    finally:
        driver.close()
