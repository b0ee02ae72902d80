"""What one request asks for: addresses, MAC, network, subnet, security groups, pod identity.

Sources, first one that sets a field wins (DESIGN.md §3.1 step 3):

1. runtimeConfig capabilities: ``ips``, ``mac``, then the pod annotations in
   ``io.kubernetes.cri.pod-annotations`` (``cloudnic.io/*``, then the seeds' keys);
2. ``args.cni.ips`` / ``args.cni.mac``;
3. ``CNI_ARGS`` ``IP=`` (comma-separated) / ``MAC=``;
4. the config's own ``network`` / ``subnet`` / ``securityGroups``.

Every source that is present is validated, used or not, so a typo never hides behind
another source. Bad values raise ``InvalidConfig`` (config, runtimeConfig, annotations,
args) or ``InvalidEnvironment`` (CNI_ARGS), naming the exact source.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from cloudnic.errors import CNIError, InvalidConfig, InvalidEnvironment

from . import capabilities
from ._text import got, show, type_name
from .config import MAX_NAME, NetConf
from .env import Env, validate_pod_arg

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

POD_ANNOTATIONS = "io.kubernetes.cri.pod-annotations"
ANN_IP = ("cloudnic.io/ip", "skynet/ip")  # comma-separated
ANN_CALICO_IPS = "cni.projectcalico.org/ipAddrs"  # JSON array of strings
ANN_SUBNET = ("cloudnic.io/subnet", "skynet/subnet_id")
ANN_NETWORK = ("cloudnic.io/network", "skynet/network_id")
ANN_SECURITY_GROUPS = ("cloudnic.io/security-groups", "skynet/security_group_ids")  # comma-separated

SRC_RC_IPS = 'runtimeConfig "ips"'
SRC_RC_MAC = 'runtimeConfig "mac"'
SRC_ARGS_IPS = "args.cni.ips"
SRC_ARGS_MAC = "args.cni.mac"
SRC_ENV_IP = 'CNI_ARGS "IP"'
SRC_ENV_MAC = 'CNI_ARGS "MAC"'

_EMPTY: Mapping[str, str] = MappingProxyType({})
ErrorClass = type[CNIError]


@dataclass(frozen=True)
class Hints:
    ips: tuple[IPAddress, ...] = ()
    ips_source: str = ""  # e.g. 'annotation "cloudnic.io/ip"'; "" when no IP was asked for
    mac: str | None = None  # lower-case colon form
    mac_source: str = ""
    network: str | None = None
    subnet: str | None = None
    security_groups: tuple[str, ...] = ()
    pod_namespace: str | None = None
    pod_name: str | None = None
    pod_uid: str | None = None
    pod_infra_container_id: str | None = None
    annotations: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    port_mappings: tuple[Mapping[str, Any], ...] = ()
    network_source: str = ""
    subnet_source: str = ""
    security_groups_source: str = ""


def annotation_source(key: str) -> str:
    return f"annotation {json.dumps(key)}"


# ---- value parsers -----------------------------------------------------------------


def parse_ip(text: Any, where: str, error: ErrorClass = InvalidConfig) -> IPAddress:
    """One ``ip[/prefix]``; the prefix is validated and dropped."""
    if not isinstance(text, str):
        raise error(f"{where}: expected an IP address string, got {got(text)}")
    value = text.strip()
    try:
        addr = ipaddress.ip_interface(value).ip if "/" in value else ipaddress.ip_address(value)
    except ValueError:
        raise error(f"{where}: {show(text)} is not an IP address (expected ip or ip/prefix)") from None
    if isinstance(addr, ipaddress.IPv6Address) and addr.scope_id:
        raise error(f"{where}: {show(text)} carries a zone index; give the address without %zone")
    if (
        addr.is_unspecified
        or addr.is_loopback
        or addr.is_multicast
        or addr.is_link_local
        or (isinstance(addr, ipaddress.IPv4Address) and addr == ipaddress.IPv4Address("255.255.255.255"))
    ):
        raise error(f"{where}: {show(text)} is not a usable unicast address for a pod")
    return addr


def parse_ips(
    items: list[Any] | tuple[Any, ...], where: str, error: ErrorClass = InvalidConfig, indexed: bool = True
) -> tuple[IPAddress, ...]:
    """A list of addresses: at most one per address family, no duplicates."""
    out: list[IPAddress] = []
    for i, item in enumerate(items):
        addr = parse_ip(item, f"{where}[{i}]" if indexed else where, error)
        for prev in out:
            if prev == addr:
                raise error(f"{where}: address {addr} is listed twice")
            if prev.version == addr.version:
                raise error(
                    f"{where}: two IPv{addr.version} addresses ({prev}, {addr}); ask for at most one "
                    "address per family"
                )
        out.append(addr)
    return tuple(out)


def parse_mac(text: Any, where: str, error: ErrorClass = InvalidConfig) -> str:
    """A unicast, non-zero 6-byte MAC (``:``, ``-`` or ``.`` notation) -> ``aa:bb:cc:dd:ee:ff``."""
    if not isinstance(text, str):
        raise error(f"{where}: expected a MAC address string, got {got(text)}")
    value = text.strip().lower()
    if len(value) == 17 and value[2::3] in (":" * 5, "-" * 5):
        digits = value.replace(value[2], "")
    elif len(value) == 14 and value[4::5] == "..":
        digits = value.replace(".", "")
    else:
        digits = ""
    if len(digits) != 12 or any(c not in "0123456789abcdef" for c in digits):
        raise error(f"{where}: {show(text)} is not a MAC address (expected aa:bb:cc:dd:ee:ff)")
    octets = bytes.fromhex(digits)
    if octets[0] & 1:
        raise error(f"{where}: {show(text)} is a multicast MAC; use a unicast MAC (even first octet)")
    if not any(octets):
        raise error(f"{where}: {show(text)} is the all-zero MAC; use a real unicast MAC")
    return ":".join(f"{b:02x}" for b in octets)


def _comma_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _dedup(items: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


# ---- sources -----------------------------------------------------------------------


def _annotations(rc: Mapping[str, Any]) -> Mapping[str, str]:
    ann = rc.get(POD_ANNOTATIONS)
    if ann is None:
        return _EMPTY
    where = f"runtimeConfig {json.dumps(POD_ANNOTATIONS)}"
    if not isinstance(ann, dict):
        raise InvalidConfig(f"{where} must be an object of annotation name to string, got {type_name(ann)}")
    for k, v in ann.items():
        if not isinstance(v, str):
            raise InvalidConfig(
                f"{annotation_source(k)}: value must be a string, got {got(v)}"
            )
    return MappingProxyType(dict(ann))


def _annotation_ips(ann: Mapping[str, str]) -> list[tuple[tuple[IPAddress, ...], str]]:
    found: list[tuple[tuple[IPAddress, ...], str]] = []
    for key in ANN_IP:
        if key in ann:
            src = annotation_source(key)
            found.append((parse_ips(_comma_list(ann[key]), src, indexed=False), src))
    if ANN_CALICO_IPS in ann:
        src = annotation_source(ANN_CALICO_IPS)
        try:
            items = json.loads(ann[ANN_CALICO_IPS])
        except (ValueError, RecursionError):
            items = None
        if not isinstance(items, list):
            raise InvalidConfig(
                f'{src}: {show(ann[ANN_CALICO_IPS])} is not a JSON array of IP strings, e.g. ["10.0.0.5"]'
            )
        found.append((parse_ips(items, src), src))
    return found


def _bounded(value: str, key: str) -> str:
    if len(value) > MAX_NAME:
        raise InvalidConfig(f"{annotation_source(key)}: a name or id of {len(value)} characters; at most "
                            f"{MAX_NAME} allowed")
    return value


def _annotation_str(ann: Mapping[str, str], keys: tuple[str, ...]) -> tuple[str | None, str]:
    for key in keys:
        value = ann.get(key, "").strip()
        if value:
            return _bounded(value, key), annotation_source(key)
    return None, ""


def _annotation_sgs(ann: Mapping[str, str]) -> tuple[tuple[str, ...], str]:
    for key in ANN_SECURITY_GROUPS:
        groups = [_bounded(g, key) for g in _comma_list(ann.get(key, ""))]
        if groups:
            return _dedup(groups), annotation_source(key)
    return (), ""


def _args_cni(conf: NetConf) -> tuple[tuple[IPAddress, ...], str | None]:
    cni = conf.args.get("cni")
    if cni is None:
        return (), None
    if not isinstance(cni, dict):
        raise InvalidConfig(f'config "args.cni" must be an object, got {type_name(cni)}')
    ips: tuple[IPAddress, ...] = ()
    if cni.get("ips") is not None:
        if not isinstance(cni["ips"], list):
            raise InvalidConfig(
                f"{SRC_ARGS_IPS}: must be an array of IP strings, got {type_name(cni['ips'])}"
            )
        ips = parse_ips(cni["ips"], SRC_ARGS_IPS)
    mac = parse_mac(cni["mac"], SRC_ARGS_MAC) if cni.get("mac") is not None else None
    return ips, mac


def _rc_ips(rc: Mapping[str, Any]) -> tuple[IPAddress, ...]:
    value = rc.get("ips")
    if value is None:
        return ()
    if not isinstance(value, list):
        raise InvalidConfig(f"{SRC_RC_IPS}: must be an array of ip[/prefix] strings, got {type_name(value)}")
    return parse_ips(value, SRC_RC_IPS)


def _first(*candidates: tuple[Any, str]) -> tuple[Any, str]:
    for value, source in candidates:
        if value:
            return value, source
    return None, ""


def resolve_hints(conf: NetConf, env: Env) -> Hints:
    """Merge every source of the request into one validated ``Hints``."""
    rc = conf.runtime_config
    rc_ips = _rc_ips(rc)
    rc_mac = parse_mac(rc["mac"], SRC_RC_MAC) if rc.get("mac") is not None else None
    ann = _annotations(rc)
    ann_ips = _annotation_ips(ann)
    args_ips, args_mac = _args_cni(conf)
    env_ip = env.args.get("IP", "")
    env_ips = parse_ips(_comma_list(env_ip), SRC_ENV_IP, InvalidEnvironment, indexed=False) if env_ip else ()
    env_mac = parse_mac(env.args["MAC"], SRC_ENV_MAC, InvalidEnvironment) if env.args.get("MAC") else None

    ips, ips_source = _first((rc_ips, SRC_RC_IPS), *ann_ips, (args_ips, SRC_ARGS_IPS), (env_ips, SRC_ENV_IP))
    mac, mac_source = _first((rc_mac, SRC_RC_MAC), (args_mac, SRC_ARGS_MAC), (env_mac, SRC_ENV_MAC))
    network, network_source = _first(_annotation_str(ann, ANN_NETWORK), (conf.network, 'config "network"'))
    subnet, subnet_source = _first(_annotation_str(ann, ANN_SUBNET), (conf.subnet, 'config "subnet"'))
    sgs, sgs_source = _first(_annotation_sgs(ann), (conf.security_groups, 'config "securityGroups"'))

    capabilities.bandwidth(rc.get("bandwidth"))

    def pod(key: str) -> str | None:
        value = env.args.get(key) or None
        return validate_pod_arg(key, value) if value is not None else None

    return Hints(
        ips=ips or (),
        ips_source=ips_source,
        mac=mac,
        mac_source=mac_source,
        network=network,
        subnet=subnet,
        security_groups=sgs or (),
        pod_namespace=pod("K8S_POD_NAMESPACE"),
        pod_name=pod("K8S_POD_NAME"),
        pod_uid=pod("K8S_POD_UID"),
        pod_infra_container_id=pod("K8S_POD_INFRA_CONTAINER_ID"),
        annotations=ann,
        port_mappings=capabilities.port_mappings(rc.get("portmappings")),
        network_source=network_source,
        subnet_source=subnet_source,
        security_groups_source=sgs_source,
    )
