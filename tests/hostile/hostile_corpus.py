"""The hostile-input corpus (issue 5 item 3): every case, and the count per category."""

from __future__ import annotations

from collections import Counter

from tests.hostile import hostile_config, hostile_env, hostile_runtime
from tests.hostile.hostile_case import Case

CASES: list[Case] = hostile_config.CASES + hostile_env.CASES + hostile_runtime.CASES


def by_category() -> dict[str, int]:
    return dict(Counter(c.category for c in CASES))
