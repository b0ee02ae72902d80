"""The ``CNI_*`` environment of one plugin invocation, parsed and validated.

Rules come from SPEC.md 1.1.0 / libcni (container id, network and interface name
validation) and from the kernel's ``dev_valid_name``. Every error is an
``InvalidEnvironment`` (code 4) naming the variable.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from cloudnic.errors import InvalidEnvironment

from ._text import show

COMMANDS = ("ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION")

# Variables each verb requires (SPEC.md "Parameters"); DEL's CNI_NETNS is optional.
REQUIRED: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
        "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
        "DEL": ("CNI_CONTAINERID", "CNI_IFNAME"),
        "GC": (),
        "STATUS": (),
        "VERSION": (),
    }
)

USED = ("CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS", "CNI_PATH")
MAX_CONTAINER_ID = 1024
MAX_POD_ARG = 253  # a Kubernetes DNS subdomain name
IFNAMSIZ = 16  # including the trailing NUL
_CONTAINER_ID_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.\-]*")
_KERNEL_SPACE = frozenset(b" \t\n\v\f\r\xa0")  # Linux lib/ctype.c isspace() includes 0xA0


@dataclass(frozen=True)
class Env:
    command: str
    container_id: str = ""
    netns: str = ""
    ifname: str = ""
    args: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    args_raw: str = ""
    path: str = ""


def parse_cni_args(s: str) -> dict[str, str]:
    """``"K=V;K2=V2"`` -> dict. Empty entries are skipped, the last duplicate wins.

    Every key is kept, including ``IgnoreUnknown``; values may contain ``=``.
    """
    out: dict[str, str] = {}
    for i, entry in enumerate(s.split(";")):
        if entry == "":
            continue
        key, sep, value = entry.partition("=")
        if not sep:
            raise InvalidEnvironment(
                f"CNI_ARGS entry {i} {show(entry)} has no '='; "
                "CNI_ARGS must be KEY=VALUE pairs separated by ';'"
            )
        if key == "":
            raise InvalidEnvironment(f"CNI_ARGS entry {i} {show(entry)} has an empty key")
        out[key] = value
    return out


def validate_container_id(value: str, var: str = "CNI_CONTAINERID") -> str:
    if value == "":
        raise InvalidEnvironment(f"{var} is empty; the runtime must pass the container id")
    if len(value) > MAX_CONTAINER_ID:
        raise InvalidEnvironment(f"{var} is {len(value)} characters long; at most {MAX_CONTAINER_ID} allowed")
    if not _CONTAINER_ID_RE.fullmatch(value):
        raise InvalidEnvironment(
            f"{var} {show(value)} is invalid: it must start with a letter or digit and contain only "
            "letters, digits, '_', '.' and '-'"
        )
    return value


def validate_ifname(value: str, var: str = "CNI_IFNAME") -> str:
    if value == "":
        raise InvalidEnvironment(f"{var} is empty; the runtime must name the interface to create")
    try:
        raw = value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidEnvironment(f"{var} {show(value)} is not valid UTF-8") from None
    if len(raw) >= IFNAMSIZ:
        raise InvalidEnvironment(
            f"{var} {show(value)} is {len(raw)} bytes long; Linux allows at most {IFNAMSIZ - 1}"
        )
    if value in (".", ".."):
        raise InvalidEnvironment(f"{var} {show(value)} is not a valid interface name")
    bad = next((c for c in value if c in "/:\0" or c.isspace()), None)
    if bad is None and any(b in _KERNEL_SPACE for b in raw):
        bad = "\xa0"
    if bad is not None:
        raise InvalidEnvironment(
            f"{var} {show(value)} contains {show(bad)}; "
            "interface names may not contain '/', ':', NUL or whitespace"
        )
    return value


def validate_pod_arg(key: str, value: str) -> str:
    """A ``K8S_POD_*`` value of CNI_ARGS: a Kubernetes name or uid (it ends up in port names and logs)."""
    if len(value) > MAX_POD_ARG or not _CONTAINER_ID_RE.fullmatch(value):
        raise InvalidEnvironment(
            f'CNI_ARGS "{key}" {show(value)} is invalid: at most {MAX_POD_ARG} letters, digits, \'_\', \'.\' '
            "and '-', starting with a letter or digit"
        )
    return value


def validate_netns(value: str) -> str:
    if "\0" in value:
        raise InvalidEnvironment(f"CNI_NETNS {show(value)} contains a NUL byte")
    if not value.startswith("/"):
        raise InvalidEnvironment(
            f"CNI_NETNS {show(value)} must be an absolute path such as /run/netns/<name>"
        )
    return value


def check_utf8(var: str, value: str) -> str:
    """Refuse a variable whose bytes were not UTF-8 (kept as surrogates by the wire decoder)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        offset = len(value[: e.start].encode("utf-8", "surrogateescape"))
        byte = value[e.start].encode("utf-8", "surrogateescape")
        raise InvalidEnvironment(
            f"{var} is not valid UTF-8 (byte 0x{byte.hex()} at offset {offset}); "
            "the runtime must pass it as UTF-8 text"
        ) from None
    return value


def parse_env(env: Mapping[str, str]) -> Env:
    """Parse and validate the ``CNI_*`` variables for the verb in ``CNI_COMMAND``."""
    for var in USED:
        if var in env:
            check_utf8(var, env[var])
    command = env.get("CNI_COMMAND", "")
    if command == "":
        raise InvalidEnvironment(f"CNI_COMMAND is not set; it must be one of {', '.join(COMMANDS)}")
    if command not in COMMANDS:
        raise InvalidEnvironment(
            f"CNI_COMMAND {show(command)} is unknown; it must be one of {', '.join(COMMANDS)}"
        )
    if command == "VERSION":
        return Env(command=command, path=env.get("CNI_PATH", ""))
    for var in REQUIRED[command]:
        if env.get(var, "") == "":
            raise InvalidEnvironment(f"{var} is required for {command} but is not set")
    container_id = env.get("CNI_CONTAINERID", "")
    ifname = env.get("CNI_IFNAME", "")
    netns = env.get("CNI_NETNS", "")
    if command in ("ADD", "CHECK", "DEL"):  # GC and STATUS do not use them: passed through as given
        validate_container_id(container_id)
        validate_ifname(ifname)
        if netns:
            validate_netns(netns)
    args_raw = env.get("CNI_ARGS", "")
    args = parse_cni_args(args_raw)
    return Env(
        command=command,
        container_id=container_id,
        netns=netns,
        ifname=ifname,
        args=MappingProxyType(args),
        args_raw=args_raw,
        path=env.get("CNI_PATH", ""),
    )
