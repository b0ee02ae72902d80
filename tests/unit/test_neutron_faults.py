"""Neutron's error replies (bodies recorded from neutron-server Zed) and transport failures become the right
cloudnic error, each naming its object and carrying no secret."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from keystoneauth1 import exceptions as ksa
from keystoneauth1 import session as ks_session

from cloudnic.errors import (
    AddressExhausted,
    AddressUnavailable,
    CNIError,
    InvalidConfig,
    NotFound,
    ProviderError,
    TryAgainLater,
)
from cloudnic.providers.neutron.faults import Fault, classify_transport, quota_resources, translate, transport_error

EP = "http://127.0.0.1:19696/v2.0"
NET = "26620086-236a-4aae-a1ba-a604148e877d"
SUB = "357257f0-8331-4396-a0f5-ac389abffd89"

# (status, body) exactly as neutron-server 2:21.0.0 (Zed) answered them
RECORDED = {
    "ip_in_use": (409, '{"NeutronError": {"type": "IpAddressAlreadyAllocated", "message": "IP address 10.66.0.5 '
                       f'already allocated in subnet {SUB}", "detail": ""}}}}'),
    "mac_in_use": (409, '{"NeutronError": {"type": "MacAddressInUse", "message": "Unable to complete operation '
                        f'for network {NET}. The mac address fa:16:3e:d2:f2:4f is in use.", "detail": ""}}}}'),
    "exhausted": (409, '{"NeutronError": {"type": "IpAddressGenerationFailure", "message": "No more IP addresses '
                       f'available on network {NET}.", "detail": ""}}}}'),
    "quota": (409, '{"NeutronError": {"type": "OverQuota", "message": "Quota exceeded for resources: '
                   "['port'].\", \"detail\": \"\"}}"),
    "no_network": (404, '{"NeutronError": {"type": "NetworkNotFound", "message": "Network '
                        '00000000-0000-0000-0000-000000000000 could not be found.", "detail": ""}}'),
    "no_subnet": (404, '{"NeutronError": {"type": "SubnetNotFound", "message": "Subnet '
                       '00000000-0000-0000-0000-000000000000 could not be found.", "detail": ""}}'),
    "no_sg": (404, '{"NeutronError": {"type": "SecurityGroupNotFound", "message": "Security group '
                   '00000000-0000-0000-0000-000000000000 does not exist", "detail": ""}}'),
    "bad_ip": (400, '{"NeutronError": {"type": "InvalidIpForNetwork", "message": "IP address 10.1.1.1 is not a '
                    'valid IP for any of the subnets on the specified network.", "detail": ""}}'),
    "bad_attr": (400, '{"NeutronError": {"type": "HTTPBadRequest", "message": "Unrecognized attribute(s) '
                      "'bogus'\", \"detail\": \"\"}}"),
    "read_only_tags": (400, '{"NeutronError": {"type": "HTTPBadRequest", "message": "Cannot update read-only '
                            'attribute tags", "detail": ""}}'),
    "noauth_header": (400, '{"NeutronError": {"type": "HTTPBadRequest", "message": "Running without keystone '
                           'AuthN requires that tenant_id is specified", "detail": ""}}'),
}


def fault(name: str, request_id: str = "req-1") -> Fault:
    status, body = RECORDED[name]
    return Fault.parse(status, body, request_id)


@pytest.mark.parametrize(("name", "cls", "code", "fragments"), [
    ("ip_in_use", AddressUnavailable, 100, ["10.66.0.5", SUB]),
    ("mac_in_use", AddressUnavailable, 100, ["fa:16:3e:d2:f2:4f"]),
    ("exhausted", AddressExhausted, 101, [NET]),
    ("quota", TryAgainLater, 11, ["port quota", "project proj-a", "quota set --ports"]),
    ("no_network", NotFound, 102, ["Network 00000000-0000-0000-0000-000000000000 could not be found"]),
    ("no_subnet", NotFound, 102, ["Subnet 00000000"]),
    ("no_sg", NotFound, 102, ["Security group 00000000"]),
    ("bad_ip", InvalidConfig, 7, ["10.1.1.1 is not a valid IP"]),
    ("bad_attr", InvalidConfig, 7, ["bogus"]),
])
def test_recorded_replies_map_to_codes(name: str, cls: type[CNIError], code: int, fragments: list[str]) -> None:
    err = translate(fault(name), what="create port on network \"pods\"", endpoint=EP, project="proj-a")
    assert type(err) is cls and err.code == code
    assert 'network "pods"' in err.msg
    for f in fragments:
        assert f in err.msg, err.msg
    assert "req-1" in err.details and str(RECORDED[name][0]) in err.details


def test_fault_parse_keeps_type_message_and_request_id() -> None:
    f = fault("ip_in_use", "req-abc")
    assert (f.status, f.type, f.request_id) == (409, "IpAddressAlreadyAllocated", "req-abc")
    assert f.message.startswith("IP address 10.66.0.5")
    assert f.details == "HTTP 409, IpAddressAlreadyAllocated, req-abc"
    assert not f.retryable and Fault(503).retryable and Fault(429).retryable and Fault(500).retryable


@pytest.mark.parametrize(("text", "message"), [
    ("", "HTTP 502"),
    ("<html><body>Bad   gateway</body></html>", "<html><body>Bad gateway</body></html>"),
    ('{"error": {"code": 401, "message": "The request you have made requires authentication.", "title": '
     '"Unauthorized"}}', "The request you have made requires authentication."),
    ('{"message": "plain"}', "plain"),
    ('{"NeutronError": "old style"}', "old style"),
])
def test_fault_parse_of_other_shapes(text: str, message: str) -> None:
    assert Fault.parse(502, text).message == message


@pytest.mark.parametrize("status", [401, 403])
def test_auth_failures_are_provider_errors(status: int) -> None:
    f = Fault.parse(status, '{"error": {"message": "The request you have made requires authentication."}}')
    err = translate(f, what="list ports", endpoint=EP)
    assert isinstance(err, ProviderError) and err.code == 103
    assert EP in err.msg and "credentials" in err.msg


@pytest.mark.parametrize("status", [500, 502, 503, 504, 429])
def test_server_failures_are_try_again_naming_the_endpoint(status: int) -> None:
    err = translate(Fault.parse(status, ""), what="get port p1", endpoint=EP)
    assert isinstance(err, TryAgainLater) and err.code == 11
    assert EP in err.msg and "get port p1" in err.msg


def test_unknown_conflict_is_try_again_and_unknown_4xx_is_provider_error() -> None:
    assert isinstance(translate(Fault.parse(409, '{"NeutronError": {"type": "PortBound", "message": "x"}}'),
                                what="w", endpoint=EP), TryAgainLater)
    assert isinstance(translate(Fault.parse(412, ""), what="w", endpoint=EP), ProviderError)


def test_quota_message_parsing() -> None:
    assert quota_resources("Quota exceeded for resources: ['port'].") == ["port"]
    assert quota_resources("Quota exceeded for resources: ['port', 'security_group'].") == ["port", "security_group"]
    assert quota_resources("something else") == []
    err = translate(Fault.parse(409, '{"NeutronError": {"type": "OverQuota", "message": "Quota exceeded."}}'),
                    what="w", endpoint=EP)
    assert "port quota of the project" in err.msg


# ---- transport failures, produced for real on loopback ---------------------------------------------------------


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A listening socket that accepts and never answers."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    try:
        yield f"http://127.0.0.1:{s.getsockname()[1]}"
    finally:
        s.close()


@pytest.fixture
def closed_port() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()                      # nothing listens there now: connection refused
    return f"http://127.0.0.1:{port}"


def real_exception(url: str, timeout: float = 0.3) -> BaseException:
    sess = ks_session.Session(timeout=timeout)
    with pytest.raises(ksa.ClientException) as info:
        sess.request(url + "/v2.0/ports", "POST", json={}, authenticated=False, connect_retries=0)
    return info.value


def test_refused_connection_was_never_sent(closed_port: str) -> None:
    exc = real_exception(closed_port)
    assert isinstance(exc, ksa.ConnectFailure)
    assert classify_transport(exc) == ("refused", True)
    err = transport_error(exc, "refused", what="create port", endpoint=closed_port)
    assert isinstance(err, TryAgainLater) and closed_port in err.msg and "is the server up" in err.msg


def test_read_timeout_may_have_been_acted_on(silent_server: str) -> None:
    exc = real_exception(silent_server)
    assert isinstance(exc, ksa.ConnectTimeout)       # keystoneauth's name for every timeout
    assert classify_transport(exc) == ("timeout", False)
    err = transport_error(exc, "timeout", what="create port", endpoint=silent_server)
    assert isinstance(err, TryAgainLater) and "did not answer in time" in err.msg and silent_server in err.msg


def test_tls_failure_is_a_provider_error() -> None:
    err = transport_error(ksa.SSLError("certificate verify failed"), "tls", what="w", endpoint=EP)
    assert isinstance(err, ProviderError) and "provider.ca_file" in err.msg
    assert classify_transport(ksa.SSLError("x")) == ("tls", False)
