"""A log call whose extra= names a LogRecord attribute raises KeyError at run time (on the
error path, typically): find every such key in the source before it bites."""

from __future__ import annotations

import ast
import logging
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "cloudnic"
RESERVED = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


def test_no_log_extra_overwrites_a_record_attribute() -> None:
    bad = []
    files = sorted(SRC.rglob("*.py"))
    assert len(files) > 20
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            for kw in node.keywords:
                if kw.arg == "extra" and isinstance(kw.value, ast.Dict):
                    for key in kw.value.keys:
                        if isinstance(key, ast.Constant) and key.value in RESERVED:
                            bad.append(f"{path.relative_to(SRC)}:{node.lineno}: {key.value!r}")
    assert bad == []
