"""provider.* validation for the neutron provider, and secrets that never show."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from cloudnic.errors import InvalidConfig
from cloudnic.providers.neutron import NeutronSettings, Secret, settings_from_table
from cloudnic.providers.neutron.settings import KNOWN_KEYS

SECRET = "s3cr3t-Pa55word-xyz"


def noauth(**extra: Any) -> dict[str, Any]:
    return {"type": "neutron", "auth_type": "noauth", "endpoint": "http://127.0.0.1:9696", "project_id": "p1",
            **extra}


def secret_file(tmp_path: Path, mode: int = 0o600, text: str = SECRET + "\n", name: str = "secret") -> str:
    path = tmp_path / name
    path.write_text(text)
    path.chmod(mode)
    return str(path)


def password(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    if "password_file" not in extra:
        extra["password_file"] = secret_file(tmp_path, name="default-secret")
    return {"auth_type": "password", "auth_url": "https://keystone.example:5000/v3", "username": "cni",
            "project_name": "pods", **extra}


def refused(table: dict[str, Any], *fragments: str) -> str:
    with pytest.raises(InvalidConfig) as info:
        settings_from_table(table)
    msg = str(info.value)
    for fragment in fragments:
        assert fragment in msg, msg
    assert info.value.code == 7
    return msg


def test_noauth_minimal_gives_the_documented_defaults() -> None:
    s = settings_from_table(noauth())
    assert s == NeutronSettings(endpoint="http://127.0.0.1:9696", project_id="p1")
    assert (s.device_owner, s.port_ready, s.timeout_s, s.retries, s.interface) == (
        "compute:cloudnic", "plugged", 30.0, 3, "public")


def test_every_documented_key_is_accepted() -> None:
    table = noauth(cloud="", auth_url="", username="", password_file="", user_domain_name="Default",
                   project_name="", project_domain_name="Default", application_credential_id="",
                   application_credential_secret_file="", region_name="RegionOne", interface="internal", ca_file="",
                   insecure=False, timeout_s=12, retries=5, device_owner="compute:pods", port_ready="active",
                   active_timeout_s=45, rate_limit_per_s=5, rate_limit_burst=7, backoff_base_s=0.1,
                   backoff_max_s=2, cache_ttl_s=0, ownership="names")
    s = settings_from_table(table)
    assert (s.region_name, s.interface, s.timeout_s, s.retries, s.device_owner, s.port_ready) == (
        "RegionOne", "internal", 12.0, 5, "compute:pods", "active")
    assert (s.active_timeout_s, s.rate_limit_per_s, s.rate_limit_burst, s.backoff_base_s, s.backoff_max_s,
            s.cache_ttl_s, s.ownership) == (45.0, 5.0, 7, 0.1, 2.0, 0.0, "names")


def test_unknown_key_is_named_with_the_known_ones() -> None:
    msg = refused(noauth(endpiont="x"), "provider.endpiont", "unknown key", "endpoint")
    assert all(k in msg for k in ("timeout_s", "port_ready"))


@pytest.mark.parametrize("key", sorted(k for k in KNOWN_KEYS if k not in ("insecure",)))
def test_wrong_type_is_named(key: str) -> None:
    refused(noauth(**{key: [1]}), f"provider.{key}")


def test_insecure_must_be_a_boolean() -> None:
    refused(noauth(insecure="yes"), "provider.insecure", "true or false")


@pytest.mark.parametrize(("key", "value"), [("timeout_s", 0), ("timeout_s", 601), ("retries", -1), ("retries", 11),
                                            ("active_timeout_s", 0), ("rate_limit_per_s", 0),
                                            ("rate_limit_burst", 0), ("cache_ttl_s", -1), ("retries", True),
                                            ("timeout_s", True), ("retries", 1.5)])
def test_numbers_out_of_range_or_of_the_wrong_kind(key: str, value: Any) -> None:
    refused(noauth(**{key: value}), f"provider.{key}")


@pytest.mark.parametrize(("key", "value"), [("auth_type", "token"), ("port_ready", "bound"),
                                            ("interface", "private"), ("ownership", "labels")])
def test_choices(key: str, value: str) -> None:
    refused(noauth(**{key: value}), f"provider.{key}", value)


def test_type_must_be_neutron_and_device_owner_non_empty() -> None:
    refused(noauth(type="qingcloud"), "provider.type")
    refused(noauth(device_owner=""), "provider.device_owner")


def test_backoff_cap_below_base_is_refused() -> None:
    refused(noauth(backoff_base_s=2, backoff_max_s=1), "provider.backoff_max_s")


def test_noauth_needs_project_and_endpoint() -> None:
    table = noauth()
    del table["project_id"]
    refused(table, "provider.project_id", "noauth")
    table = noauth()
    del table["endpoint"]
    refused(table, "provider.endpoint", "provider.host")


@pytest.mark.parametrize("url", ["127.0.0.1:9696", "ftp://h:1", "http://", "http://h:99999", "http://h/?x=1"])
def test_bad_endpoint_urls(url: str) -> None:
    refused(noauth(endpoint=url), "provider.endpoint", url)


def test_endpoint_is_normalized_without_the_version() -> None:
    assert settings_from_table(noauth(endpoint="http://h:9696/v2.0/")).endpoint == "http://h:9696"
    assert settings_from_table(noauth(endpoint="https://h/network/")).endpoint == "https://h/network"


def test_private_cloud_endpoint_from_host_port_protocol_prefix() -> None:
    table = noauth(host="10.0.0.5", port=9797, protocol="https", path_prefix="/network")
    del table["endpoint"]
    assert settings_from_table(table).endpoint == "https://10.0.0.5:9797/network"
    table = noauth(host="fd00::5", port=9696)
    del table["endpoint"]
    assert settings_from_table(table).endpoint == "http://[fd00::5]:9696"


def test_host_settings_conflict_or_are_incomplete() -> None:
    refused(noauth(host="h"), "either provider.endpoint or provider.host")
    table = noauth(port=9696)
    del table["endpoint"]
    refused(table, "provider.host", "required")
    table = noauth(host="h", protocol="gopher")
    del table["endpoint"]
    refused(table, "provider.protocol")
    table = noauth(host="h", path_prefix="network")
    del table["endpoint"]
    refused(table, "provider.path_prefix")
    refused(noauth(port=70000), "provider.port")


def test_password_auth_needs_its_keys(tmp_path: Path) -> None:
    s = settings_from_table(password(tmp_path))
    assert s.password.reveal() == SECRET and s.auth_type == "password"
    for key in ("auth_url", "username", "password_file"):
        table = password(tmp_path)
        del table[key]
        refused(table, f"provider.{key}", "password")
    table = password(tmp_path)
    del table["project_name"]
    refused(table, "provider.project_name")
    assert settings_from_table({**table, "project_id": "abc"}).project_id == "abc"
    refused(password(tmp_path, auth_url="keystone:5000"), "provider.auth_url")


def test_application_credential_needs_its_keys(tmp_path: Path) -> None:
    table = {"auth_type": "v3applicationcredential", "auth_url": "http://k:5000/v3",
             "application_credential_id": "appcred-1",
             "application_credential_secret_file": secret_file(tmp_path, name="acs")}
    s = settings_from_table(table)
    assert s.application_credential_secret.reveal() == SECRET
    for key in ("auth_url", "application_credential_id", "application_credential_secret_file"):
        t = dict(table)
        del t[key]
        refused(t, f"provider.{key}")


def test_cloud_auth_needs_nothing_else() -> None:
    s = settings_from_table({"auth_type": "cloud", "cloud": "mycloud"})
    assert s.cloud == "mycloud" and s.endpoint == ""


def test_inline_secrets_are_refused_without_echoing_them() -> None:
    msg = refused(noauth(password=SECRET), "provider.password", "provider.password_file", "0600")
    assert SECRET not in msg
    msg = refused(noauth(application_credential_secret=SECRET), "provider.application_credential_secret_file")
    assert SECRET not in msg


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o620, 0o660, 0o700 | 0o004])
def test_group_or_world_accessible_secret_files_are_refused(tmp_path: Path, mode: int) -> None:
    msg = refused(password(tmp_path, password_file=secret_file(tmp_path, mode)), "provider.password_file",
                  f"{mode:04o}", "chmod 600")
    assert SECRET not in msg


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_owner_only_secret_files_are_read(tmp_path: Path, mode: int) -> None:
    s = settings_from_table(password(tmp_path, password_file=secret_file(tmp_path, mode, SECRET + "\r\nignored\n")))
    assert s.password.reveal() == SECRET


def test_secret_file_problems_are_named(tmp_path: Path) -> None:
    refused(password(tmp_path, password_file=str(tmp_path / "missing")), "cannot open", "missing")
    refused(password(tmp_path, password_file="relative/secret"), "absolute path")
    refused(password(tmp_path, password_file=secret_file(tmp_path, text="")), "is empty")
    (tmp_path / "dir").mkdir(mode=0o700)
    refused(password(tmp_path, password_file=str(tmp_path / "dir")), "provider.password_file")
    os.symlink(secret_file(tmp_path), tmp_path / "link")
    refused(password(tmp_path, password_file=str(tmp_path / "link")), "provider.password_file")


@pytest.mark.functional       # needs root: it gives the file to another user
def test_secret_file_of_another_user_is_refused(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.fail("this test changes a file's owner: run it as root (as make test does)")
    path = secret_file(tmp_path)
    os.chown(path, 4242, -1)
    refused(password(tmp_path, password_file=path), "owned by uid 4242", "chown")


def test_no_secret_in_repr_str_or_format(tmp_path: Path) -> None:
    table = password(tmp_path)
    s = settings_from_table(table)
    for shown in (repr(s), str(s), f"{s}", f"{s!r}", repr(s.password), str(s.password), f"{s.password}",
                  f"{s.password:>40}", repr([s])):
        assert SECRET not in shown, shown
    assert "password='***'" in repr(s)
    assert "password_file=" in repr(s)  # the path is fine to show
    assert repr(Secret("")) == "Secret('')" and not Secret("")


def test_ca_file_and_insecure(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    assert settings_from_table(noauth(ca_file=str(ca))).ca_file == str(ca)
    refused(noauth(ca_file=str(tmp_path / "nope.pem")), "provider.ca_file", "nope.pem")
    refused(noauth(ca_file=str(ca), insecure=True), "provider.ca_file", "insecure")
    assert settings_from_table(noauth(insecure=True)).insecure is True
