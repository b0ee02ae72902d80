"""cloudnic.cni.errors_out: error objects and the VERSION answer."""

from __future__ import annotations

import json

import pytest

from cloudnic.cni.errors_out import error_object, version_object
from cloudnic.cni.version import SUPPORTED
from cloudnic.errors import CNIError, IncompatibleVersion, InvalidConfig, NotAvailable, TryAgainLater


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (IncompatibleVersion("v"), 1),
        (InvalidConfig("c"), 7),
        (TryAgainLater("t", "EAGAIN"), 11),
        (NotAvailable("n"), 50),
    ],
)
@pytest.mark.parametrize("v", SUPPORTED)
def test_error_object(exc: CNIError, code: int, v: str) -> None:
    out = error_object(exc, v)
    assert not out.endswith(b"\n")
    obj = json.loads(out)
    assert obj["cniVersion"] == v and obj["code"] == code and obj["msg"] == exc.msg
    assert obj.get("details", "") == exc.details


def test_empty_details_omitted_and_version_defaulted() -> None:
    assert error_object(InvalidConfig('key "x" is bad'), "") == (
        b'{"cniVersion":"1.1.0","code":7,"msg":"key \\"x\\" is bad"}'
    )


def test_error_object_with_odd_text_is_valid_json() -> None:
    exc = InvalidConfig("bad \udcff byte \u00e9 \n", "line\x00two")
    assert json.loads(error_object(exc, "1.0.0"))["details"] == "line\x00two"


@pytest.mark.parametrize("v", SUPPORTED)
def test_version_object(v: str) -> None:
    assert json.loads(version_object(v)) == {"cniVersion": v, "supportedVersions": list(SUPPORTED)}


def test_version_object_default() -> None:
    assert json.loads(version_object(""))["cniVersion"] == "1.1.0"
