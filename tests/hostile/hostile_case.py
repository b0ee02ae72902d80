"""One hostile input as data: what goes in, the CNI code that must come out, the field it must name."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tests.support.cni import conf

# Placeholders a case may put in an env value; the runner replaces them with real paths:
# {sandbox} {node} (netns names), {file} {dir} {fifo} {sock} {link} (in a temp dir), {runfile}
# (a regular file inside /run/netns).
PLACEHOLDERS = ("{sandbox}", "{node}", "{file}", "{dir}", "{fifo}", "{sock}", "{link}", "{runfile}")


@dataclass(frozen=True)
class Case:
    name: str
    code: int
    names: str                      # text msg or details must contain (case-insensitive)
    conf: Any = None                # dict | bytes | None (the default fbridge config)
    env: dict[str, str] = field(default_factory=dict)
    drop: tuple[str, ...] = ()
    command: str = "ADD"
    args: str = ""
    category: str = ""


def base() -> dict[str, Any]:
    return conf("fbridge")


def with_(**extra: Any) -> dict[str, Any]:
    """The default config with keys replaced or added."""
    return dict(base(), **extra)


def without(*keys: str) -> dict[str, Any]:
    c = base()
    for k in keys:
        c.pop(k, None)
    return c


def rc(**extra: Any) -> dict[str, Any]:
    return with_(runtimeConfig=extra)


def ann(annotations: Any) -> dict[str, Any]:
    return rc(**{"io.kubernetes.cri.pod-annotations": annotations})


def tag(category: str, cases: list[Case]) -> list[Case]:
    """The cases of one category, names prefixed with it."""
    return [Case(**{**c.__dict__, "name": f"{category}/{c.name}", "category": category}) for c in cases]
