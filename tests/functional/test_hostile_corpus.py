"""The hostile-input corpus (tests/hostile) through the real shim against one real agent."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.hostile.hostile_case import Case
from tests.hostile.hostile_corpus import CASES, by_category
from tests.hostile.hostile_runner import Bench, bench, check
from tests.support.agent import AgentHandle

pytestmark = pytest.mark.functional


@pytest.fixture(scope="module")
def hostile(agent: AgentHandle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bench]:
    with bench(agent, tmp_path_factory.mktemp("hostile")) as b:
        yield b


def test_corpus_size() -> None:
    counts = by_category()
    assert len(CASES) >= 200, counts
    assert len({c.name for c in CASES}) == len(CASES), "case names must be unique"
    assert all(n >= 8 for n in counts.values()), counts


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile(hostile: Bench, case: Case) -> None:
    check(hostile, case)
