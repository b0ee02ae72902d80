"""The standalone provider: allocation policy, refusals, MACs, persistence, concurrency."""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloudnic.errors import AddressExhausted, AddressUnavailable, CNIError, InvalidConfig, NotFound
from cloudnic.providers.base import PortSpec, Provider
from cloudnic.providers.standalone import NetworkConfig, StandaloneProvider, SubnetConfig, ownership_tags
from cloudnic.store import Store

ip = ipaddress.ip_address

PODS = NetworkConfig("pods", (
    SubnetConfig("10.22.0.0/24", exclude=("10.22.0.10", "10.22.0.64/28", "10.22.0.200-10.22.0.210")),
    SubnetConfig("10.23.0.0/29", name="blue", gateway="10.23.0.6"),
    SubnetConfig("fd00:22::/64"),
), mtu=1450)
SMALL = NetworkConfig("small", (SubnetConfig("10.30.0.0/29"),))   # 5 usable: .2 - .6


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "state.db")
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def prov(store: Store) -> StandaloneProvider:
    return StandaloneProvider(store, [PODS, SMALL])


def addrs(port) -> list[str]:
    return [str(f.address) for f in port.fixed_ips]


def one(prov: StandaloneProvider, network: str = "pods", **kw):
    return prov.create_ports(PortSpec(network, **kw))[0]


def refusal(exc_type: type[CNIError], prov: StandaloneProvider, spec: PortSpec, count: int = 1) -> str:
    with pytest.raises(exc_type) as exc:
        prov.create_ports(spec, count)
    return exc.value.msg


def used(prov: StandaloneProvider, subnet: str) -> int:
    return next(u["used"] for u in prov.usage() if u["subnet"] == subnet)


# ---- contract basics ----------------------------------------------------------------------------


def test_describe_and_network(prov: StandaloneProvider) -> None:
    assert isinstance(prov, Provider)
    caps = prov.describe()
    assert (caps.name, caps.static_ip, caps.static_mac, caps.tags) == ("standalone", True, True, True)
    assert not (caps.bulk_create or caps.hotplug_nic or caps.security_groups)
    n = prov.get_network("pods")
    assert (n.id, n.name, n.mtu, n.network_type) == ("pods", "pods", 1450, "standalone")
    assert [s.id for s in n.subnets] == ["10.22.0.0/24", "blue", "fd00:22::/64"]
    assert n.subnets[0].gateway == ip("10.22.0.1") and n.subnets[1].gateway == ip("10.23.0.6")
    assert n.subnets[2].gateway == ip("fd00:22::1")
    with pytest.raises(NotFound, match=r'network "nope".*declared networks: pods, small'):
        prov.get_network("nope")
    assert [x.name for x in prov.list_networks()] == ["pods", "small"]
    assert prov.health().ok


def test_dual_stack_by_default(prov: StandaloneProvider) -> None:
    p = one(prov, name="shop/web-0", host_id="node-1", security_groups=("sg1",))
    assert addrs(p) == ["10.22.0.2", "fd00:22::2"]
    assert [f.subnet_id for f in p.fixed_ips] == ["10.22.0.0/24", "fd00:22::/64"]
    assert (p.name, p.host_id, p.security_groups, p.network_id) == ("shop/web-0", "node-1", ("sg1",), "pods")
    assert prov.get_port(p.id) == p


def test_single_stack_network_gives_one_address(prov: StandaloneProvider) -> None:
    assert addrs(one(prov, "small")) == ["10.30.0.2"]


def test_subnet_selection(prov: StandaloneProvider) -> None:
    assert addrs(one(prov, subnet_ids=("blue",))) == ["10.23.0.1"]          # gateway is .6 here
    assert addrs(one(prov, subnet_ids=("10.23.0.0/29",))) == ["10.23.0.2"]  # by CIDR too
    assert addrs(one(prov, subnet_ids=("fd00:22::/64", "blue", "blue"))) == ["fd00:22::2", "10.23.0.3"]
    msg = refusal(NotFound, prov, PortSpec("pods", subnet_ids=("red",)))
    assert 'subnet "red"' in msg and 'network "pods"' in msg
    assert refusal(NotFound, prov, PortSpec("nope")).startswith('network "nope"')


def test_first_subnet_of_a_family_with_room_is_used(store: Store) -> None:
    net = NetworkConfig("n", (SubnetConfig("10.40.0.0/30"), SubnetConfig("10.41.0.0/30"),
                              SubnetConfig("fd00:40::/126")))
    prov = StandaloneProvider(store, [net])
    assert addrs(one(prov, "n")) == ["10.40.0.2", "fd00:40::2"]
    assert addrs(one(prov, "n")) == ["10.41.0.2", "fd00:40::3"]
    msg = refusal(AddressExhausted, prov, PortSpec("n"))
    assert msg.startswith('subnets 10.40.0.0/30, 10.41.0.0/30 of network "n" have no free address')
    assert used(prov, "fd00:40::/126") == 2                 # nothing taken by the failed call


# ---- static IPs -----------------------------------------------------------------------------------


def test_static_ip_is_honoured(prov: StandaloneProvider) -> None:
    p = one(prov, fixed_ips=(ip("10.22.0.97"),))
    assert addrs(p) == ["10.22.0.97"] and p.fixed_ips[0].subnet_id == "10.22.0.0/24"
    p2 = one(prov, fixed_ips=(ip("10.23.0.4"), ip("fd00:22::abcd")), subnet_ids=("10.22.0.0/24",))
    assert addrs(p2) == ["10.23.0.4", "fd00:22::abcd", "10.22.0.2"]
    p3 = one(prov, fixed_ips=("10.22.0.98",))      # text is accepted too
    assert addrs(p3) == ["10.22.0.98"]


@pytest.mark.parametrize(("address", "why"), [
    ("10.99.0.1", 'outside every subnet of network "pods" (10.22.0.0/24, 10.23.0.0/29, fd00:22::/64)'),
    ("10.22.0.0", 'in subnet 10.22.0.0/24 of network "pods" is the network address'),
    ("10.22.0.255", "is the broadcast address"),
    ("10.22.0.1", "in subnet 10.22.0.0/24 of network \"pods\" is the gateway"),
    ("10.23.0.6", 'in subnet "blue" (10.23.0.0/29) of network "pods" is the gateway'),
    ("10.22.0.10", 'is excluded (exclude "10.22.0.10")'),
    ("10.22.0.70", 'is excluded (exclude "10.22.0.64/28")'),
    ("10.22.0.205", 'is excluded (exclude "10.22.0.200-10.22.0.210")'),
    ("fd00:22::", "is the subnet-router anycast address"),
    ("fd00:22::1", "is the gateway"),
])
def test_static_ip_refusals_name_address_subnet_and_reason(prov: StandaloneProvider, address: str,
                                                           why: str) -> None:
    msg = refusal(AddressUnavailable, prov, PortSpec("pods", fixed_ips=(ip(address),)))
    assert msg.startswith(address) and why in msg
    assert all(u["used"] == 0 for u in prov.usage())


def test_taken_static_ip_names_the_holder(prov: StandaloneProvider) -> None:
    holder = one(prov, fixed_ips=(ip("10.22.0.7"),), name="shop/web-0")
    with pytest.raises(AddressUnavailable) as exc:
        one(prov, fixed_ips=(ip("10.22.0.7"),), name="shop/web-1")
    assert exc.value.code == 100
    assert exc.value.msg.startswith(f'10.22.0.7 in subnet 10.22.0.0/24 of network "pods" is held by port '
                                    f"{holder.id} (pod shop/web-0)")
    msg = refusal(AddressUnavailable, prov, PortSpec("pods", fixed_ips=(ip("10.22.0.8"), ip("10.22.0.8"))))
    assert "requested twice" in msg
    assert used(prov, "10.22.0.0/24") == 1


def test_fixed_ips_with_count_is_refused(prov: StandaloneProvider) -> None:
    assert "count > 1" in refusal(InvalidConfig, prov, PortSpec("pods", fixed_ips=(ip("10.22.0.7"),)), 2)
    assert "count > 1" in refusal(InvalidConfig, prov, PortSpec("pods", mac="02:00:00:00:00:01"), 2)
    assert "at least 1" in refusal(InvalidConfig, prov, PortSpec("pods"), 0)


# ---- exhaustion, all-or-nothing, round-robin -------------------------------------------------------


def test_exhaustion_names_the_subnet(prov: StandaloneProvider) -> None:
    got = {addrs(p)[0] for p in prov.create_ports(PortSpec("small"), 5)}
    assert got == {f"10.30.0.{i}" for i in range(2, 7)}
    with pytest.raises(AddressExhausted) as exc:
        one(prov, "small")
    assert exc.value.code == 101
    assert exc.value.msg == ('subnet 10.30.0.0/29 of network "small" has no free address; '
                             "add a subnet or widen it")
    health = prov.health()
    assert health.ok and "no free address in small/10.30.0.0/29" in health.detail


def test_bulk_create_is_all_or_nothing(prov: StandaloneProvider, store: Store) -> None:
    one(prov, "small")
    one(prov, "small")
    msg = refusal(AddressExhausted, prov, PortSpec("small"), 4)
    assert "(4 ports asked for)" in msg
    assert used(prov, "10.30.0.0/29") == 2
    assert len(store.execute("SELECT * FROM sa_ports WHERE network_id = 'small'").fetchall()) == 2
    assert len(prov.create_ports(PortSpec("small"), 3)) == 3


def test_round_robin_does_not_reuse_a_just_freed_address(prov: StandaloneProvider) -> None:
    a, b = one(prov, "small"), one(prov, "small")
    assert (addrs(a), addrs(b)) == (["10.30.0.2"], ["10.30.0.3"])
    prov.delete_ports([a.id])
    assert addrs(one(prov, "small")) == ["10.30.0.4"]
    assert [addrs(one(prov, "small"))[0] for _ in range(3)] == ["10.30.0.5", "10.30.0.6", "10.30.0.2"]


def test_rollback_of_callers_transaction_frees_the_allocation(prov: StandaloneProvider, store: Store) -> None:
    with pytest.raises(RuntimeError), store.transaction():
        p = one(prov, "small", mac="02:aa:00:00:00:01")
        raise RuntimeError("dataplane failed")
    assert prov.get_port(p.id) is None and used(prov, "10.30.0.0/29") == 0
    again = one(prov, "small", fixed_ips=(ip(addrs(p)[0]),), mac="02:aa:00:00:00:01")
    assert addrs(again) == addrs(p)


def test_database_refuses_double_hand_out_even_if_memory_is_wrong(store: Store) -> None:
    first, second = StandaloneProvider(store, [SMALL]), StandaloneProvider(store, [SMALL])
    a = one(first, "small")
    with pytest.raises(AddressUnavailable, match="already held"):
        one(second, "small")                                  # its memory does not know about `a`
    assert store.execute("SELECT COUNT(*) FROM sa_addresses").fetchone()[0] == 1
    assert second.get_port(a.id) == a


# ---- MACs ----------------------------------------------------------------------------------------------


def test_mac_rules(prov: StandaloneProvider) -> None:
    p = one(prov, mac="02:AA:BB:cc:00:01", name="ns/a")
    assert p.mac == "02:aa:bb:cc:00:01"
    assert one(prov, mac="06-00-00-00-00-09").mac == "06:00:00:00:00:09"
    msg = refusal(AddressUnavailable, prov, PortSpec("pods", mac="02:aa:bb:cc:00:01"))
    assert msg.startswith(f"MAC 02:aa:bb:cc:00:01 is held by port {p.id} (pod ns/a)")
    assert "multicast" in refusal(AddressUnavailable, prov, PortSpec("pods", mac="01:00:5e:00:00:01"))
    assert "not a usable" in refusal(AddressUnavailable, prov, PortSpec("pods", mac="00:00:00:00:00:00"))
    assert "not a MAC address" in refusal(InvalidConfig, prov, PortSpec("pods", mac="02:aa:bb"))
    macs = [x.mac for x in prov.create_ports(PortSpec("pods"), 50)]
    assert len(set(macs)) == 50 and all(m.startswith("02:c1:") for m in macs)


def test_mac_prefix(store: Store) -> None:
    p = one(StandaloneProvider(store, [SMALL], mac_prefix="0a:58:0a"), "small")
    assert p.mac.startswith("0a:58:0a:")
    x = NetworkConfig("x", (SubnetConfig("10.50.0.0/24"),))
    free = one(StandaloneProvider(store, [x], mac_prefix=""), "x")
    assert int(free.mac[:2], 16) & 0b11 == 0b10                # unicast, locally administered
    for bad in ("03:00", "zz", "02:c1:00:00:00:00", "2:c1"):
        with pytest.raises(InvalidConfig, match="mac_prefix"):
            StandaloneProvider(store, [SMALL], mac_prefix=bad)


# ---- delete, update, tags ----------------------------------------------------------------------------------


def test_delete_is_idempotent_and_frees(prov: StandaloneProvider) -> None:
    p = one(prov, fixed_ips=(ip("10.22.0.50"),), mac="02:00:00:00:00:50")
    prov.delete_ports([p.id, "no-such-port"])
    prov.delete_ports([p.id])
    assert prov.get_port(p.id) is None and used(prov, "10.22.0.0/24") == 0
    again = one(prov, fixed_ips=(ip("10.22.0.50"),), mac="02:00:00:00:00:50")
    assert addrs(again) == ["10.22.0.50"]


def test_tags_update_and_owned_ports(prov: StandaloneProvider) -> None:
    mine = one(prov, tags=(*ownership_tags("c1", "node-a"), "extra"))
    one(prov, tags=ownership_tags("c1", "node-b"))
    one(prov, tags=ownership_tags("c2", "node-a"))
    assert ownership_tags("c1", "node-a") == ("cloudnic:cluster=c1", "cloudnic:node=node-a")
    assert [p.id for p in prov.list_owned_ports("c1", "node-a")] == [mine.id]
    moved = prov.update_port(mine.id, name="ns/renamed", tags=ownership_tags("c1", "node-b"),
                             security_groups=("sg-a", "sg-b"))
    assert (moved.name, moved.security_groups) == ("ns/renamed", ("sg-a", "sg-b"))
    assert prov.list_owned_ports("c1", "node-a") == []
    assert len(prov.list_owned_ports("c1", "node-b")) == 2
    assert prov.get_port(mine.id) == moved and addrs(moved) == addrs(mine)
    with pytest.raises(NotFound, match="port nope"):
        prov.update_port("nope", name="x")


# ---- persistence, scale, concurrency ----------------------------------------------------------------------


def test_allocations_survive_reopen(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with Store(path) as s:
        prov = StandaloneProvider(s, [PODS, SMALL])
        held = one(prov, fixed_ips=(ip("10.22.0.9"),), name="ns/held", mac="02:00:00:00:00:09")
        a = one(prov, "small")
        b = one(prov, "small")
        prov.delete_ports([a.id])
        before = prov.usage()
    with Store(path) as s:
        prov = StandaloneProvider(s, [PODS, SMALL])
        assert prov.usage() == before
        assert prov.get_port(held.id) == held
        spec = PortSpec("pods", fixed_ips=(ip("10.22.0.9"),))
        assert "held by port" in refusal(AddressUnavailable, prov, spec)
        spec = PortSpec("pods", mac="02:00:00:00:00:09")
        assert "held by port" in refusal(AddressUnavailable, prov, spec)
        assert addrs(one(prov, "small")) == ["10.30.0.4"]        # the cursor survived too
        assert addrs(b) == ["10.30.0.3"]


def test_twenty_threads_get_distinct_addresses(store: Store) -> None:
    prov = StandaloneProvider(store, [NetworkConfig("n", (SubnetConfig("10.60.0.0/24"),))])
    results: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def work() -> None:
        try:
            for _ in range(12):
                got = addrs(prov.create_ports(PortSpec("n"))[0])[0]
                with lock:
                    results.append(got)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(results) == 240 and len(set(results)) == 240
    assert all(ip(a) in ipaddress.ip_network("10.60.0.0/24") for a in results)
    assert {ip(a) for a in results}.isdisjoint({ip("10.60.0.0"), ip("10.60.0.1"), ip("10.60.0.255")})
    assert store.execute("SELECT COUNT(DISTINCT address) FROM sa_addresses").fetchone()[0] == 240


def test_a_slash_16_with_5000_ports(tmp_path: Path) -> None:
    net = NetworkConfig("big", (SubnetConfig("10.70.0.0/16", exclude=("10.70.128.0/17",)),))
    path = tmp_path / "state.db"
    with Store(path) as s:
        prov = StandaloneProvider(s, [net])
        ports = [p for _ in range(10) for p in prov.create_ports(PortSpec("big"), 500)]
        got = {addrs(p)[0] for p in ports}
        assert len(got) == 5000
        prov.delete_ports([p.id for p in ports[:100]])
    with Store(path) as s:
        prov = StandaloneProvider(s, [net])
        assert prov.usage() == [{"network": "big", "subnet": "10.70.0.0/16", "cidr": "10.70.0.0/16",
                                 "total": 32768 - 2, "used": 4900, "free": 32766 - 4900}]
        more = {addrs(p)[0] for p in prov.create_ports(PortSpec("big"), 200)}
        assert len(more) == 200 and more.isdisjoint({addrs(p)[0] for p in ports[100:]})
        assert all(ipaddress.IPv4Address(a) < ipaddress.IPv4Address("10.70.128.0") for a in more)
