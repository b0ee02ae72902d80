"""The networks' facts kept in the store (cloudnic.store.catalog) and the neutron lookups' fallback on them
(lookup.Directory): written whenever Neutron answers, read only when Neutron cannot be reached, never in place of
Neutron's "this network is gone"."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_neutron_client import Stub, closed_url, fake_neutron, neutron_stub

from cloudnic.errors import NotFound, TryAgainLater
from cloudnic.providers.neutron import NeutronProvider, settings_from_table
from cloudnic.providers.neutron.lookup import NETWORK_KIND
from cloudnic.store import MIGRATIONS, Store
from cloudnic.store.catalog import Catalog

__all__ = ["closed_url", "neutron_stub"]       # fixtures


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "state.db")


def provider(url: str, store: Store | None, **extra: object) -> NeutronProvider:
    s = settings_from_table({"endpoint": url, "project_id": "p1", "retries": 0, **extra})
    return NeutronProvider(s, catalog=Catalog(store) if store is not None else None)


def test_catalog_rows_round_trip_under_every_ref(store: Store) -> None:
    assert any(m.description.startswith("catalog") for m in MIGRATIONS)
    cat = Catalog(store)
    cat.put("k", ("id-1", "name-1", "id-1", ""), {"a": [1, 2]}, now=10.0)
    first, entry = cat.get("k", "id-1"), cat.get("k", "name-1")
    assert first is not None and entry is not None and first.data == entry.data
    assert entry.data == {"a": [1, 2]} and entry.updated_at == 10.0 and entry.age_s(12) == 2
    cat.put("k", ("id-1",), {"a": []}, now=20.0)
    assert [(e.ref, e.data) for e in cat.entries("k")] == [("id-1", {"a": []}), ("name-1", {"a": [1, 2]})]
    assert cat.get("other", "id-1") is None and cat.delete("k", "id-1") and not cat.delete("k", "id-1")
    store.close()
    assert not cat.safe_put("k", ("x",), {})      # a cache write never fails the call it rides on


def test_networks_are_written_when_neutron_answers_and_read_when_it_cannot(neutron_stub: Stub, store: Store,
                                                                          closed_url: str) -> None:
    fake_neutron(neutron_stub, ["standard-attr-tag"])
    net = provider(neutron_stub.url, store).get_network("pods")
    assert {e.ref for e in Catalog(store).entries(NETWORK_KIND)} == {"pods", "n1"}
    # an agent restarted while Neutron is unreachable: the same facts, from the store
    again = provider(closed_url, store)
    assert again.get_network("pods") == net == again.get_network("n1")
    assert again.dir.stale_served == 1 and net.subnets[0].gateway is not None   # then from memory for a while
    with pytest.raises(TryAgainLater, match="cannot reach Neutron"):
        again.get_network("never-seen")
    with pytest.raises(TryAgainLater):           # without a catalog there is nothing to fall back on
        provider(closed_url, None).get_network("pods")


def test_a_failing_refresh_serves_the_last_facts_and_does_not_ask_on_every_call(neutron_stub: Stub,
                                                                                store: Store) -> None:
    fake_neutron(neutron_stub, ["standard-attr-tag"])
    p = provider(neutron_stub.url, store, cache_ttl_s=0)
    net = p.get_network("pods")
    neutron_stub.on("GET /v2.0/networks", (503, {}, {"NeutronError": {"type": "Down", "message": "down"}}))
    before = len(neutron_stub.seen)
    for _ in range(5):
        assert p.get_network("pods") == net
    assert len(neutron_stub.seen) == before + 1    # one quick attempt (no retries), then the stale facts for a while


def test_a_network_neutron_says_is_gone_is_not_served_from_the_catalog(neutron_stub: Stub, store: Store) -> None:
    fake_neutron(neutron_stub, ["standard-attr-tag"])
    provider(neutron_stub.url, store).get_network("pods")
    neutron_stub.on("GET /v2.0/networks", (200, {}, {"networks": []}))
    with pytest.raises(NotFound, match='network "pods" does not exist'):
        provider(neutron_stub.url, store).get_network("pods")
