"""cloudnic.cni.version: negotiation and feature predicates."""

from __future__ import annotations

import pytest

from cloudnic.cni import version
from cloudnic.errors import IncompatibleVersion, InvalidConfig


@pytest.mark.parametrize(
    ("conf", "expected"),
    [
        ({"cniVersion": "0.3.0"}, "0.3.0"),
        ({"cniVersion": "0.3.1"}, "0.3.1"),
        ({"cniVersion": "0.4.0"}, "0.4.0"),
        ({"cniVersion": "1.0.0"}, "1.0.0"),
        ({"cniVersion": "1.1.0"}, "1.1.0"),
        ({"cniVersions": ["1.0.0", "1.1.0"]}, "1.1.0"),
        ({"cniVersions": ["0.4.0", "1.0.0", "2.0.0"]}, "1.0.0"),
        ({"cniVersions": ["9.9.9", "0.3.1"], "cniVersion": "0.3.1"}, "0.3.1"),
        ({"cniVersion": "0.4.0", "cniVersions": ["1.1.0", "1.0.0"]}, "1.1.0"),
        ({"cniVersion": "1.0.0", "cniVersions": None}, "1.0.0"),
    ],
)
def test_negotiate_picks_highest_common(conf: dict[str, object], expected: str) -> None:
    assert version.negotiate(conf) == expected


@pytest.mark.parametrize(
    ("conf", "exc", "needle"),
    [
        ({}, IncompatibleVersion, '"cniVersion"'),
        ({"cniVersion": ""}, IncompatibleVersion, '"cniVersion"'),
        ({"cniVersion": "0.2.0"}, IncompatibleVersion, '"cniVersion" "0.2.0"'),
        ({"cniVersion": "2.0.0"}, IncompatibleVersion, "1.1.0"),
        ({"cniVersion": 1}, InvalidConfig, '"cniVersion"'),
        ({"cniVersion": ["1.0.0"]}, InvalidConfig, '"cniVersion"'),
        ({"cniVersions": "1.0.0"}, InvalidConfig, '"cniVersions"'),
        ({"cniVersions": [1, "1.0.0"]}, InvalidConfig, '"cniVersions"[0]'),
        ({"cniVersions": []}, IncompatibleVersion, '"cniVersions"'),
        ({"cniVersions": ["0.1.0", "2.0.0"]}, IncompatibleVersion, '"cniVersions"'),
        ({"cniVersions": ["1.0.0"], "cniVersion": "0.2.0"}, IncompatibleVersion, '"cniVersion"'),
        ({"cniVersions": ["1.0.0"], "cniVersion": 7}, InvalidConfig, '"cniVersion"'),
    ],
)
def test_negotiate_rejects(conf: dict[str, object], exc: type[Exception], needle: str) -> None:
    with pytest.raises(exc) as info:
        version.negotiate(conf)
    assert needle in str(info.value)
    if exc is IncompatibleVersion:
        assert info.value.code == 1  # type: ignore[attr-defined]
        assert "0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0" in str(info.value) or "cniVersions" in str(info.value)
    else:
        assert info.value.code == 7  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("text", "parsed"), [("1.1.0", (1, 1, 0)), ("0.4.0", (0, 4, 0)), ("1", (1, 0, 0)), ("0.3", (0, 3, 0))]
)
def test_parse(text: str, parsed: tuple[int, int, int]) -> None:
    assert version.parse(text) == parsed


@pytest.mark.parametrize("text", ["", "v1.0.0", "1.0.0.0", "1..0", "01.0.0", "1.0.0\n", "x"])
def test_parse_rejects(text: str) -> None:
    with pytest.raises(IncompatibleVersion):
        version.parse(text)


@pytest.mark.parametrize(
    ("v", "check", "status_gc", "prev_on_del"),
    [
        ("0.3.0", False, False, False),
        ("0.3.1", False, False, False),
        ("0.4.0", True, False, True),
        ("1.0.0", True, False, True),
        ("1.1.0", True, True, True),
    ],
)
def test_feature_predicates(v: str, check: bool, status_gc: bool, prev_on_del: bool) -> None:
    assert version.supports_check(v) is check
    assert version.supports_status_gc(v) is status_gc
    assert version.supports_prev_result_on_del(v) is prev_on_del


def test_supported_is_ascending() -> None:
    assert list(version.SUPPORTED) == sorted(version.SUPPORTED, key=version.parse)
    assert version.LATEST == "1.1.0"
