"""Shared settings of the hypothesis fuzzers: example count from CLOUDNIC_FUZZ_EXAMPLES, CI-friendly
(derandomized, no example database, no deadline), and a line per executed example appended to
CLOUDNIC_FUZZ_COUNT_FILE when it is set (the torture runner counts them)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

# hypothesis keeps caches (unicode tables, constants) in ./.hypothesis: keep them out of the repository
if not os.environ.get("HYPOTHESIS_STORAGE_DIRECTORY"):
    set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "cloudnic-hypothesis")

DEFAULT_EXAMPLES = 60


def examples() -> int:
    raw = os.environ.get("CLOUDNIC_FUZZ_EXAMPLES", "")
    return int(raw) if raw.isdigit() and int(raw) > 0 else DEFAULT_EXAMPLES


def fuzz_settings() -> settings:
    return settings(max_examples=examples(), derandomize=True, database=None, deadline=None, print_blob=False,
                    suppress_health_check=list(HealthCheck))


def count(test: str) -> None:
    path = os.environ.get("CLOUDNIC_FUZZ_COUNT_FILE")
    if path:
        with open(path, "a") as f:
            f.write(f"{test}\n")


# JSON values of any shape: what a mutation puts where a config value was
json_values: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
