"""NeutronClient and build_connection against stub HTTP servers on loopback: retries only where safe, bounded
backoff, rate limiting, per-call stats, and every auth type (noauth, password, application credential, clouds.yaml)
through a Keystone-shaped stub, with no secret in any error."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from cloudnic.errors import InvalidConfig, NotFound, ProviderError, TryAgainLater
from cloudnic.providers.neutron import NeutronClient, NeutronProvider, build_connection, settings_from_table

SECRET = "pw-Zq8-very-secret"
APP_SECRET = "appsecret-Kk2"


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


Reply = tuple[int, dict[str, str], Any]
Handler = Callable[[Seen], Reply]


@dataclass
class Stub:
    """A scripted HTTP server: ``routes`` maps "METHOD /path" to a handler or to a list of replies (popped)."""

    url: str = ""
    seen: list[Seen] = field(default_factory=list)
    routes: dict[str, Handler | list[Reply]] = field(default_factory=dict)
    stall: float = 0.0

    def on(self, key: str, *replies: Reply | Handler) -> None:
        if len(replies) == 1 and callable(replies[0]):
            self.routes[key] = replies[0]
        else:
            self.routes[key] = [r for r in replies if not callable(r)]

    def count(self, key: str) -> int:
        return sum(1 for s in self.seen if f"{s.method} {s.path.split('?')[0]}" == key)

    def answer(self, seen: Seen) -> Reply:
        self.seen.append(seen)
        if self.stall:
            time.sleep(self.stall)
        route = self.routes.get(f"{seen.method} {seen.path.split('?')[0]}")
        if route is None:
            return 404, {}, {"NeutronError": {"type": "HTTPNotFound", "message": f"stub: no route {seen.path}"}}
        if callable(route):
            return route(seen)
        return route.pop(0) if len(route) > 1 else route[0]


def serve(stub: Stub) -> tuple[ThreadingHTTPServer, threading.Thread]:
    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def _do(self) -> None:
            n = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(n) if n else b""
            body = json.loads(raw) if raw else None
            try:
                status, headers, payload = stub.answer(Seen(self.command, self.path, dict(self.headers), body))
            except BrokenPipeError:
                return
            data = b"" if payload is None else json.dumps(payload).encode()
            try:
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass

        do_GET = do_POST = do_PUT = do_DELETE = _do

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    srv.daemon_threads = True
    stub.url = f"http://127.0.0.1:{srv.server_address[1]}"
    th = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    th.start()
    return srv, th


@pytest.fixture
def neutron_stub() -> Iterator[Stub]:
    stub = Stub()
    srv, th = serve(stub)
    try:
        yield stub
    finally:
        srv.shutdown()
        srv.server_close()
        th.join(5)


@pytest.fixture
def keystone_stub(neutron_stub: Stub) -> Iterator[Stub]:
    """Keystone v3 enough for keystoneauth: version discovery, password and application-credential tokens, a
    catalog whose network endpoint is ``neutron_stub`` under a path prefix."""
    ks = Stub()
    srv, th = serve(ks)

    def version(_: Seen) -> Reply:
        return 200, {}, {"version": {"id": "v3.14", "status": "stable", "media-types": [],
                                     "links": [{"rel": "self", "href": f"{ks.url}/v3/"}]}}

    def tokens(seen: Seen) -> Reply:
        ident = seen.body["auth"]["identity"]
        ok = (ident["methods"] == ["password"] and ident["password"]["user"]["password"] == SECRET) or (
            ident["methods"] == ["application_credential"]
            and ident["application_credential"]["secret"] == APP_SECRET)
        if not ok:
            return 401, {}, {"error": {"code": 401, "title": "Unauthorized",
                                       "message": "The request you have made requires authentication."}}
        token = {"methods": ident["methods"], "expires_at": "2999-01-01T00:00:00.000000Z",
                 "issued_at": "2020-01-01T00:00:00.000000Z",
                 "user": {"id": "u1", "name": "cni", "domain": {"id": "default", "name": "Default"}},
                 "project": {"id": "proj-k", "name": "pods", "domain": {"id": "default", "name": "Default"}},
                 "catalog": [{"type": "network", "name": "neutron", "id": "svc1", "endpoints": [
                     {"id": "e1", "interface": "public", "region": "RegionOne", "region_id": "RegionOne",
                      "url": f"{neutron_stub.url}/network"},
                     {"id": "e2", "interface": "internal", "region": "RegionOne", "region_id": "RegionOne",
                      "url": f"{neutron_stub.url}/internal"}]}]}
        return 201, {"X-Subject-Token": "tok-123"}, {"token": token}

    ks.on("GET /v3", version)
    ks.on("GET /v3/", version)
    ks.on("POST /v3/auth/tokens", tokens)
    try:
        yield ks
    finally:
        srv.shutdown()
        srv.server_close()
        th.join(5)


def client_for(url: str, sleeps: list[float] | None = None, **extra: Any) -> NeutronClient:
    s = settings_from_table({"endpoint": url, "project_id": "p1", "backoff_base_s": 0.01, "backoff_max_s": 0.05,
                             **extra})
    recorded = sleeps if sleeps is not None else []
    return NeutronClient(s, build_connection(s), sleep=lambda d: (recorded.append(d), time.sleep(d))[1])


NETS: Reply = (200, {}, {"networks": []})


# ---- retries ----------------------------------------------------------------------------------------------------


def test_get_is_retried_on_503_then_succeeds_with_stats(neutron_stub: Stub) -> None:
    neutron_stub.on("GET /v2.0/networks", (503, {}, None), (503, {}, None), NETS)
    sleeps: list[float] = []
    c = client_for(neutron_stub.url, sleeps, retries=3)
    reply = c.request("list_networks", "GET", "/networks", what="list networks")
    assert reply.status == 200 and reply.body == {"networks": []}
    assert neutron_stub.count("GET /v2.0/networks") == 3
    assert len(sleeps) == 2 and all(0.005 <= d <= 0.05 for d in sleeps)
    st = c.stats.snapshot()["list_networks"]
    assert (st.count, st.errors, st.retries) == (1, 0, 2)


def test_retries_are_bounded_and_end_in_try_again_naming_the_endpoint(neutron_stub: Stub) -> None:
    neutron_stub.on("GET /v2.0/ports", (500, {}, {"NeutronError": {"type": "Boom", "message": "db gone"}}))
    c = client_for(neutron_stub.url, retries=2)
    with pytest.raises(TryAgainLater) as info:
        c.request("list_ports", "GET", "/ports", what="list ports")
    assert neutron_stub.count("GET /v2.0/ports") == 3
    assert neutron_stub.url in info.value.msg and "db gone" in info.value.msg
    st = c.stats.snapshot()["list_ports"]
    assert (st.errors, st.retries, st.errors_by_kind) == (1, 2, (("Boom", 1),))


def test_post_is_not_retried_on_500_but_is_on_503_and_429(neutron_stub: Stub) -> None:
    neutron_stub.on("POST /v2.0/ports", (500, {}, None))
    c = client_for(neutron_stub.url, retries=3)
    with pytest.raises(TryAgainLater):
        c.request("create_ports", "POST", "/ports", what="create port", body={"port": {}})
    assert neutron_stub.count("POST /v2.0/ports") == 1
    neutron_stub.seen.clear()
    neutron_stub.on("POST /v2.0/ports", (503, {}, None), (429, {"Retry-After": "0.03"}, None),
                    (201, {}, {"port": {"id": "x"}}))
    sleeps: list[float] = []
    c = client_for(neutron_stub.url, sleeps, retries=3)
    assert c.request("create_ports", "POST", "/ports", what="create port", body={"port": {}}).status == 201
    assert neutron_stub.count("POST /v2.0/ports") == 3
    assert sleeps[1] >= 0.03                         # Retry-After honoured (within the cap)


def test_refused_connection_is_retried_then_fails_fast(closed_url: str) -> None:
    sleeps: list[float] = []
    c = client_for(closed_url, sleeps, retries=3)
    started = time.monotonic()
    with pytest.raises(TryAgainLater) as info:
        c.request("create_ports", "POST", "/ports", what="create port", body={"port": {}})
    assert time.monotonic() - started < 2
    assert len(sleeps) == 3                          # a refused POST was never sent: safe to retry
    assert closed_url in info.value.msg and info.value.code == 11
    assert c.stats.snapshot()["create_ports"].errors_by_kind == (("refused", 1),)


def test_post_timeout_is_not_retried_get_timeout_is(neutron_stub: Stub) -> None:
    neutron_stub.stall = 0.5
    neutron_stub.on("POST /v2.0/ports", (201, {}, {}))
    neutron_stub.on("GET /v2.0/ports", (200, {}, {}))
    c = client_for(neutron_stub.url, retries=2, timeout_s=0.2)
    with pytest.raises(TryAgainLater, match="did not answer in time"):
        c.request("create_ports", "POST", "/ports", what="create port", body={"port": {}})
    assert neutron_stub.count("POST /v2.0/ports") == 1
    with pytest.raises(TryAgainLater, match="did not answer in time"):
        c.request("list_ports", "GET", "/ports", what="list ports")
    assert neutron_stub.count("GET /v2.0/ports") == 3


def test_accepted_and_expected_statuses_come_back(neutron_stub: Stub) -> None:
    neutron_stub.on("DELETE /v2.0/ports/p1", (404, {}, {"NeutronError": {"type": "PortNotFound", "message": "m"}}))
    c = client_for(neutron_stub.url)
    reply = c.request("delete_port", "DELETE", "/ports/p1", what="delete port p1", expected=(404,))
    assert reply.status == 404 and reply.fault is not None and reply.fault.type == "PortNotFound"
    assert c.stats.snapshot()["delete_port"].errors == 0
    with pytest.raises(NotFound, match="delete port p1"):
        c.request("delete_port", "DELETE", "/ports/p1", what="delete port p1")


def test_rate_limit_saturation_is_try_again(neutron_stub: Stub) -> None:
    neutron_stub.on("GET /v2.0/networks", NETS)
    c = client_for(neutron_stub.url, rate_limit_per_s=0.1, rate_limit_burst=2, timeout_s=0.5)
    c.request("list_networks", "GET", "/networks", what="w")
    c.request("list_networks", "GET", "/networks", what="w")
    with pytest.raises(TryAgainLater, match="rate limit"):
        c.request("list_networks", "GET", "/networks", what="w")
    assert neutron_stub.count("GET /v2.0/networks") == 2


def test_query_and_body_go_over_the_wire(neutron_stub: Stub) -> None:
    neutron_stub.on("GET /v2.0/ports", (200, {}, {"ports": []}))
    neutron_stub.on("PUT /v2.0/ports/p1/tags", lambda s: (200, {}, s.body))
    c = client_for(neutron_stub.url)
    c.request("list_ports", "GET", "/ports", what="w", query=[("tags", "a=1,b:c=2"), ("fields", "id"),
                                                             ("fields", "name")])
    assert neutron_stub.seen[-1].path == "/v2.0/ports?tags=a%3D1%2Cb%3Ac%3D2&fields=id&fields=name"
    assert c.request("set_tags", "PUT", "/ports/p1/tags", what="w", body={"tags": ["x"]}).body == {"tags": ["x"]}


@pytest.fixture
def closed_url() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}"


# ---- auth types -------------------------------------------------------------------------------------------------


def secret_file(tmp_path: Path, text: str, name: str) -> str:
    p = tmp_path / name
    p.write_text(text + "\n")
    p.chmod(0o600)
    return str(p)


def test_password_auth_uses_the_catalog_endpoint_and_the_token(tmp_path: Path, keystone_stub: Stub,
                                                               neutron_stub: Stub) -> None:
    neutron_stub.on("GET /network/v2.0/networks", NETS)
    s = settings_from_table({"auth_type": "password", "auth_url": f"{keystone_stub.url}/v3", "username": "cni",
                             "password_file": secret_file(tmp_path, SECRET, "pw"), "project_name": "pods"})
    p = NeutronProvider(s)
    try:
        assert p.health().ok
        assert neutron_stub.seen[-1].headers.get("X-Auth-Token") == "tok-123"
        assert p.dir.project_id() == "proj-k"
        token_req = next(x for x in keystone_stub.seen if x.method == "POST")
        user = token_req.body["auth"]["identity"]["password"]["user"]
        assert (user["name"], user["domain"]["name"]) == ("cni", "Default")
        assert token_req.body["auth"]["scope"]["project"]["name"] == "pods"
    finally:
        p.close()


def test_interface_selects_the_catalog_endpoint(tmp_path: Path, keystone_stub: Stub, neutron_stub: Stub) -> None:
    neutron_stub.on("GET /internal/v2.0/networks", NETS)
    s = settings_from_table({"auth_type": "password", "auth_url": f"{keystone_stub.url}/v3", "username": "cni",
                             "password_file": secret_file(tmp_path, SECRET, "pw"), "project_name": "pods",
                             "interface": "internal", "region_name": "RegionOne"})
    p = NeutronProvider(s)
    assert p.health().ok
    assert neutron_stub.seen[-1].path.startswith("/internal/v2.0/")


def test_wrong_password_is_a_provider_error_without_the_secret(tmp_path: Path, keystone_stub: Stub) -> None:
    wrong = "wrong-" + SECRET
    s = settings_from_table({"auth_type": "password", "auth_url": f"{keystone_stub.url}/v3", "username": "cni",
                             "password_file": secret_file(tmp_path, wrong, "pw"), "project_name": "pods"})
    p = NeutronProvider(s)
    with pytest.raises(ProviderError) as info:
        p.get_network("pods")
    err = info.value
    assert err.code == 103 and keystone_stub.url in err.msg and "authentication" in err.msg
    assert wrong not in str(err) and wrong not in repr(err) and SECRET not in str(err)
    health = p.health()
    assert not health.ok and wrong not in health.detail


def test_application_credential_auth(tmp_path: Path, keystone_stub: Stub, neutron_stub: Stub) -> None:
    neutron_stub.on("GET /network/v2.0/networks", NETS)
    s = settings_from_table({"auth_type": "v3applicationcredential", "auth_url": f"{keystone_stub.url}/v3",
                             "application_credential_id": "ac-1",
                             "application_credential_secret_file": secret_file(tmp_path, APP_SECRET, "ac")})
    assert NeutronProvider(s).health().ok
    ident = next(x for x in keystone_stub.seen if x.method == "POST").body["auth"]["identity"]
    assert ident["application_credential"]["id"] == "ac-1"


def test_keystone_down_is_try_again(tmp_path: Path, closed_url: str) -> None:
    s = settings_from_table({"auth_type": "password", "auth_url": f"{closed_url}/v3", "username": "cni",
                             "password_file": secret_file(tmp_path, SECRET, "pw"), "project_name": "pods"})
    with pytest.raises(TryAgainLater) as info:
        NeutronProvider(s).get_network("pods")
    assert closed_url in info.value.msg and SECRET not in str(info.value)


def test_clouds_yaml_cloud(tmp_path: Path, keystone_stub: Stub, neutron_stub: Stub,
                           monkeypatch: pytest.MonkeyPatch) -> None:
    neutron_stub.on("GET /network/v2.0/networks", NETS)
    neutron_stub.on("GET /direct/v2.0/networks", NETS)
    clouds = tmp_path / "clouds.yaml"
    clouds.write_text(json.dumps({"clouds": {
        "ks": {"auth": {"auth_url": f"{keystone_stub.url}/v3", "username": "cni", "password": SECRET,
                        "project_name": "pods", "user_domain_name": "Default", "project_domain_name": "Default"},
               "region_name": "RegionOne"},
        "lab": {"auth_type": "none", "network_endpoint_override": f"{neutron_stub.url}/direct"}}}))
    clouds.chmod(0o600)
    for var in [v for v in __import__("os").environ if v.startswith("OS_")]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(clouds))
    assert NeutronProvider(settings_from_table({"auth_type": "cloud", "cloud": "ks"})).health().ok
    assert neutron_stub.seen[-1].headers.get("X-Auth-Token") == "tok-123"
    assert NeutronProvider(settings_from_table({"auth_type": "cloud", "cloud": "lab"})).health().ok
    assert neutron_stub.seen[-1].path.startswith("/direct/v2.0/")
    with pytest.raises(InvalidConfig, match='cloud "nope"'):
        NeutronProvider(settings_from_table({"auth_type": "cloud", "cloud": "nope"}))


def test_os_variables_without_a_cloud_name(keystone_stub: Stub, neutron_stub: Stub,
                                           monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    neutron_stub.on("GET /network/v2.0/networks", NETS)
    for var in [v for v in __import__("os").environ if v.startswith("OS_")]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(tmp_path / "none.yaml"))
    monkeypatch.setenv("OS_AUTH_URL", f"{keystone_stub.url}/v3")
    monkeypatch.setenv("OS_USERNAME", "cni")
    monkeypatch.setenv("OS_PASSWORD", SECRET)
    monkeypatch.setenv("OS_PROJECT_NAME", "pods")
    monkeypatch.setenv("OS_USER_DOMAIN_NAME", "Default")
    monkeypatch.setenv("OS_PROJECT_DOMAIN_NAME", "Default")
    assert NeutronProvider(settings_from_table({"auth_type": "cloud"})).health().ok
    assert neutron_stub.seen[-1].headers.get("X-Auth-Token") == "tok-123"


def test_tls_settings_reach_the_session(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    conn = build_connection(settings_from_table({"endpoint": "https://h:9696", "project_id": "p",
                                                 "ca_file": str(ca), "timeout_s": 7}))
    assert conn.session.verify == str(ca) and conn.session.timeout == 7.0
    conn = build_connection(settings_from_table({"endpoint": "https://h:9696", "project_id": "p",
                                                 "insecure": True}))
    assert conn.session.verify is False


# ---- the create body, by server capability (the real server tests cover the server the peer runs) ----------------


def fake_neutron(stub: Stub, extensions: list[str]) -> None:
    stub.on("GET /v2.0/extensions", (200, {}, {"extensions": [{"alias": a} for a in extensions]}))
    stub.on("GET /v2.0/networks", (200, {}, {"networks": [{"id": "n1", "name": "pods", "mtu": 1450,
                                                           "subnets": ["s1"]}]}))
    stub.on("GET /v2.0/subnets", (200, {}, {"subnets": [{"id": "s1", "network_id": "n1", "cidr": "10.0.0.0/24",
                                                         "gateway_ip": "10.0.0.1"}]}))
    counter = iter(range(1000))

    def create(seen: Seen) -> Reply:
        def port(entry: dict[str, Any]) -> dict[str, Any]:
            i = next(counter)
            return dict(entry, id=f"p{i}", mac_address=f"fa:16:3e:00:00:{i:02x}", status="DOWN",
                        fixed_ips=[{"subnet_id": "s1", "ip_address": f"10.0.0.{10 + i}"}],
                        tags=entry.get("tags", []) if "tag-ports-during-bulk-creation" in extensions else [])
        if "ports" in seen.body:
            return 201, {}, {"ports": [port(e) for e in seen.body["ports"]]}
        return 201, {}, {"port": port(seen.body["port"])}

    stub.on("POST /v2.0/ports", create)
    for i in range(10):
        stub.on(f"PUT /v2.0/ports/p{i}/tags", lambda s: (200, {}, s.body))


OWNER = ("cloudnic:cluster=c1", "cloudnic:node=n1")


@pytest.mark.parametrize("tag_on_create", [True, False])
def test_bulk_create_body_and_tagging(neutron_stub: Stub, tag_on_create: bool) -> None:
    from cloudnic.providers.base import PortSpec

    ext = ["standard-attr-tag", "standard-attr-description", "security-group"]
    fake_neutron(neutron_stub, ext + (["tag-ports-during-bulk-creation"] if tag_on_create else []))
    s = settings_from_table({"endpoint": neutron_stub.url, "project_id": "p1", "device_owner": "compute:pods"})
    ports = NeutronProvider(s).create_ports(PortSpec(network_id="pods", name="pool", host_id="n1", tags=OWNER), 3)
    (post,) = [x for x in neutron_stub.seen if x.method == "POST"]
    entries = post.body["ports"]
    assert len(entries) == 3
    for e in entries:
        assert e["network_id"] == "n1" and e["project_id"] == "p1" and e["device_owner"] == "compute:pods"
        assert e["binding:host_id"] == "n1" and e["name"] == "pool"
        if tag_on_create:
            assert e["tags"] == list(OWNER) and "description" not in e
        else:
            assert "tags" not in e and e["description"] == " ".join(OWNER)
    puts = [x for x in neutron_stub.seen if x.method == "PUT"]
    assert len(puts) == (0 if tag_on_create else 3)
    assert all(set(OWNER) <= set(p.tags) for p in ports)


def test_failed_tagging_deletes_the_new_ports(neutron_stub: Stub) -> None:
    from cloudnic.providers.base import PortSpec

    fake_neutron(neutron_stub, ["standard-attr-tag"])
    neutron_stub.on("PUT /v2.0/ports/p1/tags", (400, {}, {"NeutronError": {"type": "HTTPBadRequest",
                                                                          "message": "bad tag"}}))
    for i in range(3):
        neutron_stub.on(f"DELETE /v2.0/ports/p{i}", (204, {}, None))
    s = settings_from_table({"endpoint": neutron_stub.url, "project_id": "p1"})
    with pytest.raises(InvalidConfig, match=r"tagging the new ports failed, they were deleted: .*bad tag"):
        NeutronProvider(s).create_ports(PortSpec(network_id="pods", tags=OWNER), 3)
    assert sorted(x.path for x in neutron_stub.seen if x.method == "DELETE") == [
        "/v2.0/ports/p0", "/v2.0/ports/p1", "/v2.0/ports/p2"]


def test_bulk_without_room_is_refused_before_the_post(neutron_stub: Stub) -> None:
    from cloudnic.errors import AddressExhausted
    from cloudnic.providers.base import PortSpec

    fake_neutron(neutron_stub, ["standard-attr-tag", "network-ip-availability"])
    neutron_stub.on("GET /v2.0/network-ip-availabilities/n1", (200, {}, {"network_ip_availability": {
        "subnet_ip_availability": [{"subnet_id": "s1", "total_ips": 253, "used_ips": 251}]}}))
    s = settings_from_table({"endpoint": neutron_stub.url, "project_id": "p1"})
    with pytest.raises(AddressExhausted, match="2 free addresses, fewer than the 3 ports"):
        NeutronProvider(s).create_ports(PortSpec(network_id="pods"), 3)
    assert neutron_stub.count("POST /v2.0/ports") == 0
    neutron_stub.on("GET /v2.0/network-ip-availabilities/n1", (403, {}, None))    # not allowed: no check
    assert len(NeutronProvider(s).create_ports(PortSpec(network_id="pods"), 3)) == 3
