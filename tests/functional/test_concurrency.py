"""Issue 5 item 4: 100 sandboxes ADDed and then DELeted 20-way (threads exec'ing the real
shim) against one agent, repeated on bridge and routed: 0 errors, 0 duplicate addresses,
0 leftovers (the torture's invariants after every round)."""

from __future__ import annotations

from pathlib import Path

import pytest
from bench.torture.node import rig, standalone_nets
from bench.torture.parallel import run_rounds

pytestmark = [pytest.mark.functional, pytest.mark.slow]


def test_100_sandboxes_20_way_repeated(tmp_path: Path) -> None:
    with rig(tmp_path, standalone_nets(), sandboxes=100) as r:
        tally = run_rounds(r, 3, 100, 20, print)
        status = r.agent.admin({"op": "status"})
    assert tally.rounds == 3 and tally.requests == 600
    assert tally.errors == [], "\n".join(tally.errors[:20])
    assert tally.duplicate_ips == 0
    assert tally.violations == [], "\n".join(tally.violations[:20])
    assert tally.leftovers == [], "\n".join(tally.leftovers[:20])
    assert status["store"]["attachments"] == 0 and status["store"]["pending_journal"] == 0
    assert all(u["used"] == 0 for u in status["usage"]), status["usage"]
