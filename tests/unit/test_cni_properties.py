"""Property tests: the cni package raises nothing but CNIError subclasses on any input."""

from __future__ import annotations

import ipaddress
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudnic.cni.config import parse_netconf
from cloudnic.cni.env import COMMANDS, parse_env
from cloudnic.cni.hints import ANN_CALICO_IPS, ANN_IP, ANN_SECURITY_GROUPS, ANN_SUBNET, resolve_hints
from cloudnic.cni.result import IPConfig, Result, parse_result
from cloudnic.cni.version import SUPPORTED
from cloudnic.errors import CNIError

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def optional(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """Objects holding any subset of ``fields``."""
    return st.fixed_dictionaries({}, optional=fields)


scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
)
json_values = st.recursive(
    scalars,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
    max_leaves=20,
)
ip_texts = st.sampled_from(
    ["10.0.0.5", "fd00::5", "10.0.0.5/24", "10.0.0.300", "::", "x", "", "10.0.0.5,fd00::5"]
)
mac_texts = st.sampled_from(["02:00:00:00:00:01", "0A-00-00-00-00-01", "01:00:00:00:00:00", "zz", ""])
ann_keys = st.sampled_from([*ANN_IP, ANN_CALICO_IPS, *ANN_SUBNET, *ANN_SECURITY_GROUPS, "other"])
annotation_maps = st.dictionaries(ann_keys, st.text(max_size=20) | ip_texts, max_size=4) | json_values

runtime_config = optional(
    {
        "ips": st.lists(ip_texts | json_values, max_size=3) | json_values,
        "MAC": mac_texts | json_values,
        "portMappings": st.lists(st.dictionaries(st.text(max_size=5), json_values, max_size=3), max_size=2)
        | json_values,
        "io.kubernetes.cri.pod-annotations": annotation_maps,
        "mac": mac_texts,
    },
)
configs = optional(
    {
        "cniVersion": st.sampled_from([*SUPPORTED, "0.2.0", ""]) | json_values,
        "cniVersions": st.lists(st.sampled_from(SUPPORTED) | json_values, max_size=3) | json_values,
        "name": st.sampled_from(["net", "a.b-c", "-x"]) | json_values,
        "type": st.just("cloudnic") | json_values,
        "network": json_values,
        "subnet": json_values,
        "securityGroups": st.lists(st.text(max_size=5), max_size=3) | json_values,
        "mtu": st.integers(0, 70000) | json_values,
        "runtimeConfig": runtime_config | json_values,
        "args": optional(
            {
                "cni": optional(
                    {
                        "ips": st.lists(ip_texts, max_size=3) | json_values,
                        "mac": mac_texts | json_values,
                    },
                )
            },
        )
        | json_values,
        "prevResult": json_values,
        "ipam": st.none() | json_values,
        "cni.dev/valid-attachments": st.lists(
            st.fixed_dictionaries({"containerID": st.text(max_size=5), "ifname": st.text(max_size=5)}),
            max_size=2,
        )
        | json_values,
    },
)
cni_args = st.lists(
    st.tuples(
        st.sampled_from(["IP", "MAC", "K8S_POD_NAME", "IgnoreUnknown", ""]),
        ip_texts | mac_texts | st.text(max_size=10),
    ),
    max_size=4,
).map(lambda kv: ";".join(f"{k}={v}" if k else v for k, v in kv))
envs = optional(
    {
        "CNI_COMMAND": st.sampled_from(COMMANDS) | st.text(max_size=6),
        "CNI_CONTAINERID": st.text(max_size=20),
        "CNI_NETNS": st.text(max_size=20),
        "CNI_IFNAME": st.text(max_size=20),
        "CNI_ARGS": cni_args | st.text(max_size=30),
        "CNI_PATH": st.text(max_size=10),
    },
)


@SETTINGS
@given(st.binary(max_size=200), st.sampled_from(COMMANDS))
def test_parse_netconf_arbitrary_bytes(data: bytes, command: str) -> None:
    try:
        parse_netconf(data, command)
    except CNIError:
        pass


@SETTINGS
@given(configs, st.sampled_from(COMMANDS))
def test_parse_netconf_structured(conf: dict[str, Any], command: str) -> None:
    try:
        parse_netconf(json.dumps(conf).encode(), command)
    except CNIError:
        pass


@SETTINGS
@given(envs)
def test_parse_env(env: dict[str, str]) -> None:
    try:
        parse_env(env)
    except CNIError:
        pass


@SETTINGS
@given(configs, cni_args)
def test_resolve_hints(conf: dict[str, Any], args: str) -> None:
    base = {"cniVersion": "1.1.0", "name": "net", "type": "cloudnic"}
    try:
        netconf = parse_netconf(json.dumps({**base, **conf}).encode(), "ADD")
        env = parse_env(
            {
                "CNI_COMMAND": "ADD",
                "CNI_CONTAINERID": "c",
                "CNI_NETNS": "/n",
                "CNI_IFNAME": "eth0",
                "CNI_ARGS": args,
            }
        )
        hints = resolve_hints(netconf, env)
    except CNIError:
        return
    assert len({ip.version for ip in hints.ips}) == len(hints.ips)
    assert bool(hints.ips) == bool(hints.ips_source)
    assert (hints.mac is None) == (hints.mac_source == "")


@SETTINGS
@given(json_values)
def test_parse_result_arbitrary(obj: Any) -> None:
    try:
        parse_result(obj)
    except CNIError:
        pass


addresses = st.one_of(
    st.tuples(st.ip_addresses(v=4), st.integers(0, 32)).map(
        lambda t: ipaddress.ip_interface(f"{t[0]}/{t[1]}")
    ),
    st.tuples(st.ip_addresses(v=6), st.integers(0, 128)).map(
        lambda t: ipaddress.ip_interface(f"{t[0]}/{t[1]}")
    ),
)


@SETTINGS
@given(st.lists(addresses, max_size=4), st.sampled_from(SUPPORTED))
def test_result_round_trip(addrs: list[Any], v: str) -> None:
    r = Result(ips=tuple(IPConfig(a) for a in addrs))
    assert parse_result(json.loads(r.to_json(v))) == r
