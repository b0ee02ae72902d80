"""A process killed with SIGKILL in the middle of a transaction loop leaves a whole database.

The child writes batches: each batch is one transaction of ROWS attachments, a port and
a journal entry, and records the batch number in ``meta``. After the kill the
database must open, pass ``PRAGMA integrity_check`` and hold only whole batches.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from cloudnic.store import Store

ROWS = 40

CHILD = r"""
import sys
from cloudnic.store import AttachmentRecord, PortRecord, Store

store = Store(sys.argv[1])
rows = int(sys.argv[2])
batch = int(store.get_meta("last_batch", "-1")) + 1
announced = False
while True:
    with store.transaction():
        jid = store.journal_begin("add", f"batch-{batch}", {"batch": batch})
        for i in range(rows):
            store.put_attachment(AttachmentRecord(
                key=f"net/b{batch}-{i}/eth0", network=f"b{batch}", container_id=f"b{batch}-{i}",
                ifname="eth0", netns="/proc/1/ns/net", state="assigned", port_id=f"p{batch}",
                mode="bridge", host_ifname="tap", result={"pad": "x" * 2000}, cni_version="1.1.0"))
        store.put_port(PortRecord(port_id=f"p{batch}", provider="standalone", network_id="n",
                                  state="assigned", mac="02:c1:00:00:00:01", fixed_ips=()))
        store.journal_update(jid, {"done": True})
        store.journal_end(jid)
        store.set_meta("last_batch", str(batch))
    if not announced:
        print("ready", flush=True)
        announced = True
    batch += 1
"""


def _run_and_kill(path: Path, delay: float) -> None:
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path), str(ROWS)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line.strip() == "ready", child.stderr.read() if child.stderr else line
        time.sleep(delay)
        assert child.poll() is None, "the writer stopped on its own"
    finally:
        if child.poll() is None:
            child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        for stream in (child.stdout, child.stderr):
            if stream is not None:
                stream.close()
    assert child.returncode == -signal.SIGKILL


def _check(path: Path) -> int:
    with Store(path) as s:
        assert s.integrity_check() == "ok"
        last = int(s.get_meta("last_batch", "-1") or "-1")
        assert last >= 0
        counts = dict(s.execute("SELECT network, COUNT(*) FROM attachments GROUP BY network").fetchall())
        assert counts == {f"b{b}": ROWS for b in range(last + 1)}, "a partial batch survived the crash"
        assert {p.port_id for p in s.list_ports()} == {f"p{b}" for b in range(last + 1)}
        assert s.journal_pending() == []
        return last


def test_sigkill_mid_transaction_leaves_only_whole_transactions(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    rng = random.Random(7)
    previous = -1
    for _ in range(4):
        _run_and_kill(path, rng.uniform(0.05, 0.4))
        last = _check(path)
        assert last > previous, "the committed batches of a killed writer were lost"
        previous = last
