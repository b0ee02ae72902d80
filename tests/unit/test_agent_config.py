"""The agent config: every documented key is accepted, every bad value is refused by name."""

from __future__ import annotations

import tomllib

import pytest

from cloudnic.agent.config import load_config, parse_config
from cloudnic.errors import InvalidConfig

GOOD = """
[agent]
socket = "/tmp/x.sock"
state_dir = "/tmp/state"
node_name = "n1"
cluster_id = "c1"
log_level = "debug"
max_request_bytes = 4096
request_timeout_s = 5
workers = 2
host_netns = "/run/netns/node"

[provider]
type = "standalone"

[networks.pods]
mode = "routed"
mtu = 1450
[[networks.pods.subnets]]
cidr = "10.1.0.0/24"
gateway = "10.1.0.1"
exclude = ["10.1.0.2-10.1.0.9", "10.1.0.128/28"]
dns = ["10.1.0.53"]
routes = [{dst = "10.9.0.0/16", gw = "10.1.0.254"}]
[[networks.pods.subnets]]
cidr = "fd00:1::/64"

[networks.mv]
mode = "macvlan"
parent = "eth1"
[[networks.mv.subnets]]
cidr = "10.2.0.0/24"

[namespaces.shop]
network = "pods"
subnet = "10.1.0.0/24"
security_groups = ["web"]
"""


def test_good_config_parses() -> None:
    cfg = parse_config(tomllib.loads(GOOD))
    assert cfg.socket == "/tmp/x.sock" and cfg.workers == 2 and cfg.request_timeout_s == 5.0
    pods = cfg.networks["pods"]
    assert pods.mode == "routed" and pods.mtu == 1450 and pods.bridge == "cn-pods"
    assert pods.provider_network is not None and len(pods.provider_network.subnets) == 2
    assert cfg.networks["mv"].parent == "eth1"
    assert cfg.namespaces["shop"].security_groups == ("web",)
    assert str(cfg.db_path) == "/tmp/state/state.db"


def test_overrides(tmp_path) -> None:
    p = tmp_path / "a.toml"
    p.write_text(GOOD)
    cfg = load_config(p, state_dir="/x", socket_path="/y.sock")
    assert cfg.state_dir == "/x" and cfg.socket == "/y.sock"


BAD = [
    ("[agent]\nbogus = 1\n[networks.a]\n[[networks.a.subnets]]\ncidr='10.0.0.0/24'", "bogus"),
    ("[agent]\nworkers = 0\n[networks.a]\n[[networks.a.subnets]]\ncidr='10.0.0.0/24'", "agent.workers"),
    ("[agent]\nworkers = true\n[networks.a]\n[[networks.a.subnets]]\ncidr='10.0.0.0/24'", "agent.workers"),
    ("[agent]\nlog_level = 'loud'\n[networks.a]\n[[networks.a.subnets]]\ncidr='10.0.0.0/24'", "log_level"),
    ("[provider]\ntype = 'aws'\n[networks.a]\n[[networks.a.subnets]]\ncidr='10.0.0.0/24'", "provider.type"),
    ("", "networks"),
    ("[networks.a]\nmode = 'vlan'\n[[networks.a.subnets]]\ncidr='10.0.0.0/24'", "networks.a.mode"),
    ("[networks.a]\nmtu = 20\n[[networks.a.subnets]]\ncidr='10.0.0.0/24'", "networks.a.mtu"),
    ("[networks.a]\nmode = 'macvlan'\n[[networks.a.subnets]]\ncidr='10.0.0.0/24'", "networks.a.parent"),
    ("[networks.a]\nbridge = 'way-too-long-bridge-name'\n[[networks.a.subnets]]\ncidr='10.0.0.0/24'",
     "networks.a.bridge"),
    ("[networks.a]\nmode = 'bridge'", "networks.a.subnets"),
    ("[networks.a]\n[[networks.a.subnets]]\ngateway='10.0.0.1'", "cidr"),
    ("[networks.a]\n[[networks.a.subnets]]\ncidr=5", "networks.a.subnets[0].cidr"),
    ("[networks.a]\n[[networks.a.subnets]]\ncidr='10.0.0.0/24'\nexclude='x'", "exclude"),
    ("[networks.a]\ngateway_on_bridge = 'yes'\n[[networks.a.subnets]]\ncidr='10.0.0.0/24'", "gateway_on_bridge"),
    ("[networks.a]\n[[networks.a.subnets]]\ncidr='10.0.0.0/24'\n[namespaces.x]\nnetwork='b'", "namespaces.x.network"),
]


@pytest.mark.parametrize(("text", "names"), BAD)
def test_bad_config_names_the_key(text: str, names: str) -> None:
    with pytest.raises(InvalidConfig) as e:
        parse_config(tomllib.loads(text))
    assert names in str(e.value)


def test_unreadable_and_invalid_toml(tmp_path) -> None:
    with pytest.raises(InvalidConfig, match="cannot read"):
        load_config(tmp_path / "missing.toml")
    p = tmp_path / "bad.toml"
    p.write_text("[agent\n")
    with pytest.raises(InvalidConfig, match="not valid TOML"):
        load_config(p)


@pytest.mark.parametrize(("cidr", "extra", "names"), [
    ("10.0.0.0/33", "", "10.0.0.0/33"),
    ("10.0.0.0/24", "gateway='10.1.0.1'", "gateway"),
    ("10.0.0.0/24", "exclude=['10.5.0.1']", "10.5.0.1"),
])
def test_subnet_values_are_validated_at_load(cidr: str, extra: str, names: str) -> None:
    text = f"[networks.a]\n[[networks.a.subnets]]\ncidr='{cidr}'\n{extra}\n"
    with pytest.raises(InvalidConfig) as e:
        parse_config(tomllib.loads(text))
    assert names in str(e.value)


NEUTRON = """
[provider]
type = "neutron"
auth_type = "noauth"
endpoint = "http://127.0.0.1:19696"

[networks.pods]
mode = "linuxbridge"
neutron_network = "pods-net"
subnet = "pods-v4"
security_groups = ["default", "web"]
[networks.pods.pool]
min_ready = 2
max_idle = 8
batch = 4
"""


def test_neutron_networks() -> None:
    cfg = parse_config(tomllib.loads(NEUTRON))
    assert cfg.provider == "neutron"
    assert cfg.provider_settings == {"auth_type": "noauth", "endpoint": "http://127.0.0.1:19696"}
    pods = cfg.networks["pods"]
    assert pods.mode == "linuxbridge" and pods.neutron_network == "pods-net" and pods.subnet == "pods-v4"
    assert pods.security_groups == ("default", "web") and pods.provider_network is None
    assert pods.pool is not None and (pods.pool.min_ready, pods.pool.max_idle, pods.pool.batch) == (2, 8, 4)


@pytest.mark.parametrize(("change", "names"), [
    (("mode = \"linuxbridge\"", "mode = \"routed\""), "networks.pods.mode"),
    (("batch = 4", "batch = 0"), "networks.pods.pool.batch"),
    (("max_idle = 8", "max_idle = 1"), "max_idle"),
    (("min_ready = 2", "min_ready = -1"), "networks.pods.pool"),
    (("[networks.pods.pool]", "[[networks.pods.subnets]]\ncidr='10.0.0.0/24'\n[networks.pods.pool]"), "subnets"),
    (("type = \"neutron\"", "type = \"qingcloud\""), "provider.type"),
])
def test_neutron_network_errors(change: tuple[str, str], names: str) -> None:
    with pytest.raises(InvalidConfig) as e:
        parse_config(tomllib.loads(NEUTRON.replace(*change)))
    assert names in str(e.value)


def test_neutron_keys_refused_for_standalone() -> None:
    text = "[networks.a]\nneutron_network = 'x'\n[[networks.a.subnets]]\ncidr='10.0.0.0/24'\n"
    with pytest.raises(InvalidConfig, match=r"networks\.a\.neutron_network: only for provider neutron"):
        parse_config(tomllib.loads(text))
    with pytest.raises(InvalidConfig, match="provider"):
        parse_config(tomllib.loads("[provider]\ntype='standalone'\nendpoint='x'\n" + text.replace(
            "neutron_network = 'x'\n", "")))
