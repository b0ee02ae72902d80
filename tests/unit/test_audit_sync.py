"""audit_sync against a real store and the standalone provider, with a fake dataplane."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

from cloudnic.agent.audit import audit_sync
from cloudnic.dataplane.base import Attachment
from cloudnic.providers.base import PortSpec
from cloudnic.providers.standalone import NetworkConfig, StandaloneProvider, SubnetConfig
from cloudnic.store import AttachmentRecord, PortRecord, Store


class FakeDataplane:
    def __init__(self) -> None:
        self.links: set[str] = set()

    def host_objects(self) -> set[str]:
        return set(self.links)

    def unplug(self, fd: int | None, att: Attachment, plugged: object) -> None:
        self.links.discard(att.host_ifname)


def make(tmp_path: Path):
    store = Store(tmp_path / "s.db")
    prov = StandaloneProvider(store, [NetworkConfig(name="n", subnets=(SubnetConfig(cidr="10.5.0.0/24"),))])
    dp = FakeDataplane()
    rt = SimpleNamespace(store=store, provider=prov, dataplanes=lambda: {"n": dp}, dataplane=lambda name: dp)
    released: list[str] = []
    svc = SimpleNamespace(rt=rt, cfg=SimpleNamespace(cluster_id="c", node_name="n1"),
                          release_sync=lambda rec, fd, jid: released.append(rec.key))
    return svc, store, prov, dp, released


def port(prov: StandaloneProvider, name: str):
    return prov.create_ports(PortSpec(network_id="n", name=name, tags=("cloudnic:cluster=c", "cloudnic:node=n1")))[0]


def test_leaked_port_missing_port_and_stale_row(tmp_path: Path) -> None:
    svc, store, prov, dp, released = make(tmp_path)
    now = time.time()
    leaked = port(prov, "leak")
    live = port(prov, "live")
    store.put_port(PortRecord(port_id=live.id, provider="standalone", network_id="n", state="assigned",
                              mac=live.mac, fixed_ips=(), attachment_key="n/c1/eth0", data={}, created_at=now,
                              updated_at=now))
    store.put_attachment(AttachmentRecord(
        key="n/c1/eth0", network="n", container_id="c1", ifname="eth0", netns="", state="assigned",
        port_id=live.id, mode="bridge", host_ifname="cnaaaaaaaaaaa", result={}, cni_version="1.0.0", plugged={},
        created_at=now, updated_at=now))
    dp.links = {"cnaaaaaaaaaaa"}
    prov.delete_ports([live.id])            # the cloud lost the live pod's port
    stale = port(prov, "stale")
    store.put_port(PortRecord(port_id=stale.id, provider="standalone", network_id="n", state="assigned",
                              mac=stale.mac, fixed_ips=(), attachment_key="n/gone/eth0", data={}, created_at=now,
                              updated_at=now))
    rep = audit_sync(svc, fix=False)  # type: ignore[arg-type]
    kinds = {(f["kind"], f["subject"]) for f in rep["findings"]}
    assert kinds == {("leaked-port", leaked.id), ("missing-port", live.id), ("stale-port-row", stale.id)}
    assert rep["views"] == {"store_attachments": 1, "store_ports": 2, "kernel_links": 1, "provider_ports": 2}
    fixed = audit_sync(svc, fix=True)  # type: ignore[arg-type]
    assert all(f["fixed"] for f in fixed["findings"])
    assert prov.get_port(leaked.id) is None and prov.get_port(stale.id) is None
    assert store.get_port(stale.id) is None
    assert released == ["n/c1/eth0"]


def test_orphan_link_removed_and_clean_state_has_no_findings(tmp_path: Path) -> None:
    svc, _store, _prov, dp, _ = make(tmp_path)
    dp.links = {"cnbbbbbbbbbbb"}
    rep = audit_sync(svc, fix=True)  # type: ignore[arg-type]
    assert [(f["kind"], f["fixed"]) for f in rep["findings"]] == [("orphan-link", True)]
    assert dp.links == set()
    assert audit_sync(svc, fix=False)["findings"] == []  # type: ignore[arg-type]
