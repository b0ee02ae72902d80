"""The token request of the neutron provider (auth.py): paced by the client-side rate limit, retried with backoff
when Keystone is unreachable, and never re-sent while a back-off after a 401 runs (account lockout). Against the
Keystone-shaped stub of test_neutron_client.py; the Neutron stub answers every GET."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
from test_neutron_client import APP_SECRET, NETS, SECRET, Stub, closed_url, keystone_stub, neutron_stub, secret_file

from cloudnic.errors import ProviderError, TryAgainLater
from cloudnic.providers.neutron import NeutronProvider, settings_from_table
from cloudnic.providers.neutron.auth import AuthGate
from cloudnic.providers.neutron.retry import Backoff, TokenBucket
from cloudnic.providers.neutron.settings import NeutronSettings

__all__ = ["closed_url", "keystone_stub", "neutron_stub"]       # fixtures


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def tokens(ks: Stub) -> int:
    return ks.count("POST /v3/auth/tokens")


def password(tmp_path: Path, ks: Stub, secret: str, **extra: Any) -> dict[str, Any]:
    return {"auth_type": "password", "auth_url": f"{ks.url}/v3", "username": "cni", "project_name": "pods",
            "password_file": secret_file(tmp_path, secret, f"pw-{random.random()}"), **extra}


def provider(table: dict[str, Any], clock: Clock | None = None) -> NeutronProvider:
    p = NeutronProvider(settings_from_table(table))
    if clock is not None:
        p.client.auth._clock = clock
    return p


def test_a_refused_password_is_not_sent_again_until_the_back_off_ends(tmp_path: Path, keystone_stub: Stub,
                                                                       neutron_stub: Stub) -> None:
    neutron_stub.on("GET /network/v2.0/networks", NETS)
    wrong = "wrong-" + SECRET
    clock = Clock()
    p = provider(password(tmp_path, keystone_stub, wrong, auth_backoff_base_s=60, auth_backoff_max_s=600), clock)
    with pytest.raises(ProviderError) as first:
        p.get_network("pods")
    assert tokens(keystone_stub) == 1 and "401" in first.value.details
    for _ in range(20):                       # every call in the period fails at once, nothing goes out
        with pytest.raises(ProviderError) as again:
            p.get_network("pods")
        assert not p.health().ok
    assert tokens(keystone_stub) == 1
    msg = again.value.msg
    assert f"{keystone_stub.url}/v3" in msg and 'user "cni"' in msg and "not sent again before" in msg
    assert "UTC" in msg and wrong not in msg and wrong not in again.value.details and again.value.code == 103
    left = p.client.auth.blocked_for()
    assert 30 <= left <= 60                  # equal jitter: [base/2, base]
    clock.now += left + 0.01                 # the period ends: one more attempt, refused again, longer back-off
    with pytest.raises(ProviderError):
        p.get_network("pods")
    assert tokens(keystone_stub) == 2 and 60 <= p.client.auth.blocked_for() <= 120
    for _ in range(10):                      # capped
        clock.now += p.client.auth.blocked_for() + 0.01
        with pytest.raises(ProviderError):
            p.get_network("pods")
    assert tokens(keystone_stub) == 12 and p.client.auth.blocked_for() <= 600


def test_new_credentials_start_with_a_clean_slate(tmp_path: Path, keystone_stub: Stub, neutron_stub: Stub) -> None:
    neutron_stub.on("GET /network/v2.0/networks", NETS)
    bad = provider(password(tmp_path, keystone_stub, "nope"))
    with pytest.raises(ProviderError):
        bad.get_network("pods")
    assert bad.client.auth.blocked_for() > 0
    good = provider(password(tmp_path, keystone_stub, SECRET))      # a reloaded config builds a new provider
    assert good.health().ok and tokens(keystone_stub) == 2
    bad.client.auth.reset()
    assert bad.client.auth.blocked_for() == 0


def test_application_credential_refusal_names_the_credential_id(tmp_path: Path, keystone_stub: Stub) -> None:
    table = {"auth_type": "v3applicationcredential", "auth_url": f"{keystone_stub.url}/v3",
             "application_credential_id": "ac-77",
             "application_credential_secret_file": secret_file(tmp_path, "x" + APP_SECRET, "ac")}
    p = provider(table)
    for _ in range(3):
        with pytest.raises(ProviderError) as info:
            p.describe()
    assert tokens(keystone_stub) == 1
    assert "application credential ac-77" in info.value.msg and APP_SECRET not in str(info.value)


def test_unreachable_keystone_is_retried_with_backoff_then_try_again(tmp_path: Path, closed_url: str) -> None:
    table = {"auth_type": "password", "auth_url": f"{closed_url}/v3", "username": "cni", "project_name": "pods",
             "password_file": secret_file(tmp_path, SECRET, "pw"), "retries": 3, "backoff_base_s": 0.01,
             "backoff_max_s": 0.02}
    p = provider(table)
    slept: list[float] = []
    p.client.auth._sleep = slept.append
    with pytest.raises(TryAgainLater):
        p.get_network("pods")
    assert len(slept) == 3 and all(0.005 <= d <= 0.02 for d in slept)
    assert p.client.auth.blocked_for() == 0          # not a refusal: no back-off period


def test_the_token_request_takes_a_token_of_the_rate_limit(tmp_path: Path, keystone_stub: Stub,
                                                           neutron_stub: Stub) -> None:
    neutron_stub.on("GET /network/v2.0/networks", NETS)
    p = provider(password(tmp_path, keystone_stub, SECRET, rate_limit_per_s=0.1, rate_limit_burst=2,
                          timeout_s=0.2))
    # burst 2: the token request takes one, the first GET the other; the next GET finds the bucket empty
    assert p.health().ok
    assert tokens(keystone_stub) == 1 and neutron_stub.count("GET /network/v2.0/networks") == 1
    assert not p.health().ok
    assert neutron_stub.count("GET /network/v2.0/networks") == 1


def test_gate_unit_paces_and_blocks_without_io() -> None:
    class Session:
        def __init__(self) -> None:
            self.auth = self
            self.auth_ref: Any = None
            self.calls = 0

        def get_access(self) -> None: ...

        def get_auth_headers(self) -> dict[str, str]:
            from keystoneauth1 import exceptions as ksa

            self.calls += 1
            raise ksa.Unauthorized("The request you have made requires authentication.", http_status=401)

    class Conn:
        session = Session()

    s = NeutronSettings(auth_type="password", auth_url="http://k:5000/v3", username="u", auth_backoff_base_s=10,
                        auth_backoff_max_s=40)
    clock = Clock()
    bucket = TokenBucket(100, 100, clock=clock, sleep=lambda _d: None)
    gate = AuthGate(s, Conn(), bucket, Backoff(0.1, 1, 2), rng=random.Random(1), clock=clock,
                    sleep=lambda _d: None, wall=lambda: 0.0)
    for _ in range(5):
        with pytest.raises(ProviderError, match="not sent again before 00:00:"):
            gate.ensure("w")
    assert Conn.session.calls == 1 and gate.token_requests == 1 and bucket.available() == 99
    delays = []
    for _ in range(4):
        clock.now += gate.blocked_for()
        with pytest.raises(ProviderError):
            gate.ensure("w")
        delays.append(gate.blocked_for())
    assert Conn.session.calls == 5 and delays[-1] <= 40 and delays[1] > 10


def test_every_request_of_every_call_path_takes_a_rate_limit_token(tmp_path: Path, keystone_stub: Stub,
                                                                   neutron_stub: Stub) -> None:
    """Each HTTP request the provider sends (token, lookups, lists, GETs, create, delete, health, project) took one
    token of the client-side bucket first: no call path bypasses the rate limit."""
    from test_neutron_client import fake_neutron

    from cloudnic.providers.base import PortSpec

    ext = ["standard-attr-tag", "tag-ports-during-bulk-creation", "security-group", "network-ip-availability"]
    fake_neutron(neutron_stub, ext)
    # the catalog's endpoint is <neutron>/network: serve the same routes there
    for key, route in list(neutron_stub.routes.items()):
        method, path = key.split(" ", 1)
        neutron_stub.routes[f"{method} /network{path}"] = route
    neutron_stub.on("GET /network/v2.0/ports", (200, {}, {"ports": [], "ports_links": []}))
    neutron_stub.on("GET /network/v2.0/ports/p0", (200, {}, {"port": {
        "id": "p0", "network_id": "n1", "mac_address": "fa:16:3e:00:00:00", "status": "ACTIVE", "fixed_ips": [],
        "tags": []}}))
    neutron_stub.on("DELETE /network/v2.0/ports/p0", (204, {}, None))
    neutron_stub.on("GET /network/v2.0/network-ip-availabilities/n1", (403, {}, None))
    neutron_stub.on("GET /network/v2.0/security-groups", (200, {}, {"security_groups": [{"id": "sg1"}]}))
    p = provider(password(tmp_path, keystone_stub, SECRET))
    taken = []
    acquire = p.client.bucket.acquire
    p.client.bucket.acquire = lambda max_wait: taken.append(1) or acquire(max_wait)  # type: ignore[method-assign]
    assert p.dir.project_id() == "proj-k"
    p.get_network("pods")
    p.create_ports(PortSpec(network_id="pods", tags=("cloudnic:cluster=c", "cloudnic:node=n"),
                            security_groups=("web",)), 2)
    p.list_owned_ports("c", "n")
    assert p.get_port("p0") is not None
    p.wait_active("p0", timeout=1)
    p.delete_ports(["p0"])
    assert p.health().ok
    sent = len([s for s in neutron_stub.seen if s.path.startswith("/network/")])
    assert tokens(keystone_stub) == 1
    assert len(taken) == sent + tokens(keystone_stub), (len(taken), sent)
    snapshot = p.stats.snapshot()      # and each was counted per operation
    assert sum(op.count + op.retries for op in snapshot.values()) == sent
