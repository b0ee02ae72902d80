"""The neutron provider against a real neutron-server (Zed, noauth) on loopback: every contract method, the port
fields read back through openstacksdk, the wire traffic counted by the proxy in front of the server, and each failure
mapped to its CNI code with no port left behind."""

from __future__ import annotations

import ipaddress
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from peer import NeutronPeer, Project, lab_pod, unique

from cloudnic.errors import AddressExhausted, AddressUnavailable, InvalidConfig, NotFound, TryAgainLater
from cloudnic.providers.base import Port, PortSpec
from cloudnic.providers.neutron import NeutronProvider, settings_from_table

pytestmark = pytest.mark.neutron

CLUSTER = "cnn-cluster"
NODE = "cnn-n2-node"
OWNER = (f"cloudnic:cluster={CLUSTER}", f"cloudnic:node={NODE}")
ZERO_UUID = "00000000-0000-0000-0000-000000000000"


def make(endpoint: str, project: Project, **extra: Any) -> NeutronProvider:
    table = {
        "type": "neutron",
        "auth_type": "noauth",
        "endpoint": endpoint,
        "project_id": project.id,
        "timeout_s": 60,
        **extra,
    }
    return NeutronProvider(settings_from_table(table))


@pytest.fixture
def provider(neutron: NeutronPeer, neutron_project: Project) -> Iterator[NeutronProvider]:
    neutron.fake_agent(NODE)  # binding:host_id=NODE binds at once (vif_type bridge)
    p = make(neutron.counting_endpoint.url, neutron_project)
    try:
        yield p
    finally:
        p.close()


def spec(net: Any, **kw: Any) -> PortSpec:
    kw.setdefault("tags", OWNER)
    kw.setdefault("host_id", NODE)
    return PortSpec(network_id=net.network_name, **kw)


def read_back(project: Project, port_id: str) -> Any:
    return project.net.get_port(port_id)


def same(a: Port, b: Port) -> bool:
    """The same port as the contract sees it (``extra`` holds the revision number, which tagging bumps)."""
    fields = ("id", "network_id", "mac", "fixed_ips", "name", "status", "security_groups", "device_owner", "host_id")
    return all(getattr(a, f) == getattr(b, f) for f in fields) and set(a.tags) == set(b.tags)


# ---- capabilities and networks -------------------------------------------------------------------------------


def test_describe_follows_the_servers_extensions(neutron: NeutronPeer, provider: NeutronProvider) -> None:
    caps = provider.describe()
    ext = neutron.extensions()
    assert caps.name == "neutron" and caps.bulk_create and not caps.hotplug_nic
    assert caps.security_groups == ("security-group" in ext)
    assert caps.tags == ("standard-attr-tag" in ext) and caps.tags
    assert caps.static_ip and caps.static_mac


def test_get_network_returns_prefix_gateway_routes_dns_and_mtu(
    neutron: NeutronPeer, neutron_project: Project, provider: NeutronProvider
) -> None:
    net = neutron_project.network(
        cidr="10.77.3.0/24",
        gateway_ip="10.77.3.254",
        mtu=1400,
        dns_nameservers=["10.77.3.53", "10.77.3.54"],
        host_routes=[{"destination": "10.99.0.0/16", "nexthop": "10.77.3.1"}],
    )
    by_name = provider.get_network(net.network_name)
    assert provider.get_network(net.network_id) == by_name
    assert (by_name.id, by_name.name, by_name.mtu, by_name.network_type) == (
        net.network_id,
        net.network_name,
        1400,
        "vxlan",
    )
    assert isinstance(by_name.segmentation_id, int)
    (sub,) = by_name.subnets
    assert sub.id == net.subnet_id and sub.name == net.subnet_name
    assert sub.cidr == ipaddress.ip_network("10.77.3.0/24") and sub.cidr.prefixlen == 24
    assert sub.gateway == ipaddress.ip_address("10.77.3.254")
    assert [(r.dst, r.gw) for r in sub.host_routes] == [("10.99.0.0/16", "10.77.3.1")]
    assert sub.dns_nameservers == ("10.77.3.53", "10.77.3.54")
    for ref in (net.subnet_id, net.subnet_name, "10.77.3.0/24"):
        assert provider.find_subnet(net.network_name, ref) == sub
    # cached: a second lookup within the TTL makes no request
    neutron.counting_endpoint.reset()
    provider.get_network(net.network_name)
    assert neutron.counting_endpoint.total() == 0


def test_missing_network_and_subnet_are_not_found(neutron_project: Project, provider: NeutronProvider) -> None:
    for ref in ("cnn-no-such-net", ZERO_UUID):
        with pytest.raises(NotFound) as info:
            provider.get_network(ref)
        assert info.value.code == 102 and ref in info.value.msg
    net = neutron_project.network(cidr="10.77.4.0/24")
    with pytest.raises(NotFound) as info:
        provider.create_ports(spec(net, subnet_ids=("cnn-no-such-subnet",)))
    assert info.value.code == 102 and "cnn-no-such-subnet" in info.value.msg and net.network_name in info.value.msg
    with pytest.raises(NotFound, match="cnn-no-such-sg"):
        provider.create_ports(spec(net, security_groups=("cnn-no-such-sg",)))
    with pytest.raises(NotFound):
        provider.create_ports(spec(net, security_groups=(ZERO_UUID,)))
    assert neutron_project.ports() == []


# ---- create and read back ------------------------------------------------------------------------------------


def test_one_port_carries_every_field(neutron_project: Project, provider: NeutronProvider) -> None:
    net = neutron_project.network(cidr="10.77.5.0/24")
    (port,) = provider.create_ports(
        spec(
            net,
            name="shop/web-0",
            subnet_ids=(net.subnet_name,),
            fixed_ips=(ipaddress.ip_address("10.77.5.50"),),
            mac="fa:16:3e:aa:00:01",
            security_groups=(net.security_group_name,),
        )
    )
    back = read_back(neutron_project, port.id)
    assert back.device_owner == "compute:cloudnic"
    assert back.binding_host_id == NODE and back.binding_vif_type == "bridge"
    assert back.name == "shop/web-0"
    assert set(OWNER) <= set(back.tags)
    assert back.security_group_ids == [net.security_group_id]
    assert back.mac_address == "fa:16:3e:aa:00:01"
    assert back.fixed_ips == [{"subnet_id": net.subnet_id, "ip_address": "10.77.5.50"}]
    assert back.project_id == neutron_project.id
    # the returned Port is what Neutron holds
    assert port.fixed_ips[0].subnet_id == net.subnet_id and str(port.fixed_ips[0].address) == "10.77.5.50"
    assert (port.mac, port.name, port.host_id, port.device_owner) == (
        "fa:16:3e:aa:00:01",
        "shop/web-0",
        NODE,
        "compute:cloudnic",
    )
    assert port.status == back.status == "DOWN" and port.network_id == net.network_id
    assert set(OWNER) <= set(port.tags) and port.security_groups == (net.security_group_id,)
    again = provider.get_port(port.id)
    assert again is not None and same(again, port)


def test_device_owner_setting_applies_unless_the_spec_names_one(neutron: NeutronPeer,
                                                                  neutron_project: Project) -> None:
    neutron.fake_agent(NODE)
    net = neutron_project.network(cidr="10.77.24.0/24")
    p = make(neutron.counting_endpoint.url, neutron_project, device_owner="compute:pods")
    try:
        (default,) = p.create_ports(spec(net))
        (chosen,) = p.create_ports(spec(net, device_owner="compute:other"))
        assert read_back(neutron_project, default.id).device_owner == "compute:pods" == default.device_owner
        assert read_back(neutron_project, chosen.id).device_owner == "compute:other"
    finally:
        p.close()


def test_default_security_group_by_name(neutron_project: Project, provider: NeutronProvider) -> None:
    net = neutron_project.network(cidr="10.77.6.0/24")
    (port,) = provider.create_ports(spec(net, security_groups=("default",)))
    (default,) = list(neutron_project.net.security_groups(project_id=neutron_project.id, name="default"))
    assert read_back(neutron_project, port.id).security_group_ids == [default.id]


def test_bulk_create_is_one_post(neutron: NeutronPeer, neutron_project: Project, provider: NeutronProvider) -> None:
    net = neutron_project.network(cidr="10.77.7.0/24")
    counter = neutron.counting_endpoint
    counter.reset()
    ports = provider.create_ports(spec(net, name="pool", security_groups=(net.security_group_id,)), 6)
    counts = counter.counts()
    assert counts.get("POST /v2.0/ports") == 1
    tag_puts = sum(n for key, n in counts.items() if key.startswith("PUT /v2.0/ports/") and key.endswith("/tags"))
    expected_puts = 0 if "tag-ports-during-bulk-creation" in neutron.extensions() else 6
    assert tag_puts == expected_puts
    assert counter.total("POST") == 1
    assert len(ports) == 6
    assert len({p.id for p in ports}) == len({p.mac for p in ports}) == 6
    assert len({p.fixed_ips[0].address for p in ports}) == 6
    for p in ports:
        back = read_back(neutron_project, p.id)
        assert set(OWNER) <= set(back.tags) and set(OWNER) <= set(p.tags)
        assert back.binding_host_id == NODE and back.device_owner == "compute:cloudnic"
        assert back.security_group_ids == [net.security_group_id]
    stats = provider.stats.snapshot()["create_ports"]
    assert stats.count == 1 and stats.errors == 0


def test_bulk_larger_than_the_free_addresses_leaves_nothing(
    neutron_project: Project, provider: NeutronProvider
) -> None:
    net = neutron_project.network(cidr="10.77.8.0/24", allocation_pools=[{"start": "10.77.8.10", "end": "10.77.8.12"}])
    with pytest.raises(AddressExhausted) as info:
        provider.create_ports(spec(net), 5)
    assert info.value.code == 101 and "3 free" in info.value.msg
    assert neutron_project.ports() == []
    # none of the three addresses leaked: one port each still fits
    got = [provider.create_ports(spec(net))[0] for _ in range(3)]
    assert sorted(str(p.fixed_ips[0].address) for p in got) == ["10.77.8.10", "10.77.8.11", "10.77.8.12"]


def test_neutron_bulk_create_is_atomic(neutron_project: Project, provider: NeutronProvider) -> None:
    """What create_ports relies on: when one port of a bulk fails, Neutron keeps none of them."""
    net = neutron_project.network(cidr="10.77.9.0/24")
    (held,) = provider.create_ports(spec(net))
    entry = {"network_id": net.network_id, "project_id": neutron_project.id}
    body = {"ports": [dict(entry, name="cnn-a"), dict(entry, name="cnn-b"), dict(entry, mac_address=held.mac)]}
    reply = provider.client.request("raw", "POST", "/ports", what="raw bulk", body=body, accept=(409,))
    assert reply.status == 409 and reply.fault is not None and reply.fault.type == "MacAddressInUse"
    assert [p.id for p in neutron_project.ports()] == [held.id]
    used = neutron_project.net.get(f"/network-ip-availabilities/{net.network_id}").json()
    assert used["network_ip_availability"]["used_ips"] == 1


def test_concurrent_creates_from_worker_threads(neutron_project: Project, provider: NeutronProvider) -> None:
    net = neutron_project.network(cidr="10.77.10.0/24")
    got: list[Port] = []
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            got.extend(provider.create_ports(spec(net, name=f"ns/pod-{i}")))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    assert len({p.fixed_ips[0].address for p in got}) == 4


# ---- conflicts, quota, outages -------------------------------------------------------------------------------


def test_static_ip_conflict_names_the_holder(neutron_project: Project, provider: NeutronProvider) -> None:
    net = neutron_project.network(cidr="10.77.11.0/24")
    ip = ipaddress.ip_address("10.77.11.50")
    (holder,) = provider.create_ports(spec(net, name="shop/holder", fixed_ips=(ip,)))
    with pytest.raises(AddressUnavailable) as info:
        provider.create_ports(spec(net, name="shop/other", fixed_ips=(ip,)))
    err = info.value
    assert err.code == 100
    assert "10.77.11.50" in err.msg and holder.id in err.msg and '"shop/holder"' in err.msg
    assert "compute:cloudnic" in err.msg and NODE in err.msg
    assert [p.id for p in neutron_project.ports()] == [holder.id]


def test_mac_conflict_and_foreign_address(neutron_project: Project, provider: NeutronProvider) -> None:
    net = neutron_project.network(cidr="10.77.12.0/24")
    (holder,) = provider.create_ports(spec(net, name="shop/mac", mac="fa:16:3e:aa:00:02"))
    with pytest.raises(AddressUnavailable) as info:
        provider.create_ports(spec(net, mac="FA:16:3E:AA:00:02"))
    assert info.value.code == 100 and holder.id in info.value.msg and "fa:16:3e:aa:00:02" in info.value.msg.lower()
    with pytest.raises(AddressUnavailable, match=r"10\.1\.1\.1 is outside every subnet"):
        provider.create_ports(spec(net, fixed_ips=(ipaddress.ip_address("10.1.1.1"),)))
    with pytest.raises(InvalidConfig):
        provider.create_ports(spec(net, fixed_ips=(ipaddress.ip_address("10.77.12.9"),)), 2)
    assert [p.id for p in neutron_project.ports()] == [holder.id]


def test_port_quota_is_try_again_naming_quota_and_project(neutron_project: Project, provider: NeutronProvider) -> None:
    net = neutron_project.network(cidr="10.77.13.0/24")
    neutron_project.set_quota(port=2)
    provider.create_ports(spec(net), 2)
    for count in (1, 3):
        with pytest.raises(TryAgainLater) as info:
            provider.create_ports(spec(net), count)
        assert info.value.code == 11
        assert "port quota" in info.value.msg and neutron_project.id in info.value.msg
    assert len(neutron_project.ports()) == 2


def test_stopped_endpoint_fails_fast_with_try_again(
    neutron: NeutronPeer, neutron_project: Project, provider: NeutronProvider
) -> None:
    net = neutron_project.network(cidr="10.77.14.0/24")
    provider.get_network(net.network_name)  # warm caches; then the server "goes away"
    neutron.counting_endpoint.down()
    started = time.monotonic()
    with pytest.raises(TryAgainLater) as info:
        provider.create_ports(spec(net))
    assert time.monotonic() - started < 3
    assert neutron.counting_endpoint.url in info.value.msg and info.value.code == 11
    health = provider.health()
    assert not health.ok and neutron.counting_endpoint.url in health.detail
    neutron.counting_endpoint.up()
    assert provider.health().ok
    assert neutron_project.ports() == []


def test_stopped_server_is_try_again(neutron: NeutronPeer, neutron_project: Project, provider: NeutronProvider) -> None:
    net = neutron_project.network(cidr="10.77.15.0/24")
    (port,) = provider.create_ports(spec(net))
    neutron.stop()
    try:
        started = time.monotonic()
        with pytest.raises(TryAgainLater):
            provider.get_port(port.id)
        assert time.monotonic() - started < 5
        assert not provider.health().ok
    finally:
        neutron.start()
    again = provider.get_port(port.id)
    assert again is not None and same(again, port)


def test_slow_server_times_out_and_a_post_is_not_repeated(neutron: NeutronPeer, neutron_project: Project) -> None:
    net = neutron_project.network(cidr="10.77.16.0/24")
    p = make(neutron.counting_endpoint.url, neutron_project, timeout_s=1, retries=2, backoff_base_s=0.05)
    try:
        p.get_network(net.network_name)
        p.describe()
        counter = neutron.counting_endpoint
        counter.reset()
        counter.slow(3)
        started = time.monotonic()
        with pytest.raises(TryAgainLater, match="did not answer in time") as info:
            p.create_ports(spec(net, name="slow"))
        assert time.monotonic() - started < 2.5
        assert info.value.code == 11 and counter.url in info.value.msg
        assert counter.counts().get("POST /v2.0/ports") == 1  # a timed-out POST is never sent again
        with pytest.raises(TryAgainLater):
            p.get_port(ZERO_UUID)
        assert counter.counts().get(f"GET /v2.0/ports/{ZERO_UUID}") == 3  # a GET is retried (retries=2)
        counter.up()
        # Neutron did create the port after all: list_owned_ports finds it for the reconciler
        owned = wait_owned(p, 1)
        assert [x.name for x in owned] == ["slow"]
    finally:
        p.close()


def wait_owned(p: NeutronProvider, n: int, timeout: float = 20) -> list[Port]:
    deadline = time.monotonic() + timeout
    while True:
        owned = p.list_owned_ports(CLUSTER, NODE)
        if len(owned) >= n or time.monotonic() > deadline:
            return owned
        time.sleep(0.2)


# ---- ownership, update, delete -------------------------------------------------------------------------------


@pytest.mark.parametrize("ownership", ["auto", "names"])
def test_list_owned_ports_finds_exactly_this_nodes(
    neutron: NeutronPeer, neutron_project: Project, ownership: str
) -> None:
    neutron.fake_agent(NODE)
    neutron.fake_agent("cnn-n2-other")
    net = neutron_project.network(cidr="10.77.17.0/24")
    p = make(neutron.counting_endpoint.url, neutron_project, ownership=ownership)
    try:
        mine = p.create_ports(spec(net, name="ns/mine"), 2)
        mine += p.create_ports(spec(net, name="ns/one"))
        p.create_ports(
            spec(net, tags=(f"cloudnic:cluster={CLUSTER}", "cloudnic:node=cnn-n2-other"), host_id="cnn-n2-other")
        )
        p.create_ports(spec(net, tags=("cloudnic:cluster=cnn-other-cluster", f"cloudnic:node={NODE}")))
        p.create_ports(spec(net, tags=()))
        neutron_project.net.create_port(network_id=net.network_id, project_id=neutron_project.id, name="cnn-x")
        owned = p.list_owned_ports(CLUSTER, NODE)
        assert sorted(x.id for x in owned) == sorted(x.id for x in mine)
        assert all(set(OWNER) <= set(x.tags) for x in owned)
        assert sorted(x.name for x in owned) == ["ns/mine", "ns/mine", "ns/one"]
        if ownership == "names":
            assert read_back(neutron_project, mine[0].id).name == f"cloudnic/{CLUSTER}/{NODE}/ns/mine"
            assert read_back(neutron_project, mine[0].id).tags == []
        assert p.list_owned_ports(CLUSTER, "cnn-n2-nobody") == []
    finally:
        p.close()


def test_untagged_port_is_still_owned_through_its_description(
    neutron_project: Project, provider: NeutronProvider
) -> None:
    """Between the POST and the PUT .../tags (servers without tag-ports-during-bulk-creation) a crash leaves a
    port without tags; its description still says whose it is."""
    net = neutron_project.network(cidr="10.77.18.0/24")
    (port,) = provider.create_ports(spec(net, name="ns/crashy"))
    neutron_project.net.put(f"/ports/{port.id}/tags", json={"tags": []})
    if "tag-ports-during-bulk-creation" in provider.dir.extensions():
        assert provider.list_owned_ports(CLUSTER, NODE) == []  # tags were set in the create: no window
    else:
        (found,) = provider.list_owned_ports(CLUSTER, NODE)
        assert found.id == port.id and set(OWNER) <= set(found.tags)


def test_update_port_name_groups_and_tags(
    neutron: NeutronPeer, neutron_project: Project, provider: NeutronProvider
) -> None:
    net = neutron_project.network(cidr="10.77.19.0/24")
    other = neutron_project.security_group()
    (port,) = provider.create_ports(spec(net, name="pool", security_groups=(net.security_group_id,)))
    neutron.counting_endpoint.reset()
    new_tags = (*OWNER, "cloudnic:pool=x")
    updated = provider.update_port(port.id, name="shop/web-1", security_groups=(other.name,), tags=new_tags)
    counts = neutron.counting_endpoint.counts()
    assert counts.get(f"PUT /v2.0/ports/{port.id}") == 1 and counts.get(f"PUT /v2.0/ports/{port.id}/tags") == 1
    back = read_back(neutron_project, port.id)
    assert back.name == updated.name == "shop/web-1"
    assert back.security_group_ids == [other.id] and updated.security_groups == (other.id,)
    assert sorted(back.tags) == sorted(new_tags) and set(updated.tags) == set(new_tags)
    assert provider.update_port(port.id, security_groups=(net.security_group_id,)).security_groups == (
        net.security_group_id,
    )
    with pytest.raises(NotFound, match=ZERO_UUID):
        provider.update_port(ZERO_UUID, name="x")


def test_update_port_by_name_keeps_ownership(neutron: NeutronPeer, neutron_project: Project) -> None:
    neutron.fake_agent(NODE)
    net = neutron_project.network(cidr="10.77.20.0/24")
    p = make(neutron.counting_endpoint.url, neutron_project, ownership="names")
    try:
        (port,) = p.create_ports(spec(net, name="pool"))
        neutron.counting_endpoint.reset()
        updated = p.update_port(port.id, name="shop/api-0", tags=OWNER)
        assert neutron.counting_endpoint.total("PUT") == 1
        assert updated.name == "shop/api-0" and set(OWNER) <= set(updated.tags)
        assert read_back(neutron_project, port.id).name == f"cloudnic/{CLUSTER}/{NODE}/shop/api-0"
        assert p.update_port(port.id, name="shop/api-1").name == "shop/api-1"
        assert read_back(neutron_project, port.id).name == f"cloudnic/{CLUSTER}/{NODE}/shop/api-1"
    finally:
        p.close()


def test_delete_is_idempotent(neutron_project: Project, provider: NeutronProvider) -> None:
    net = neutron_project.network(cidr="10.77.21.0/24")
    ports = provider.create_ports(spec(net), 3)
    ids = [p.id for p in ports]
    provider.delete_ports(ids)
    assert neutron_project.ports() == []
    provider.delete_ports(ids)  # again: already gone is success
    provider.delete_ports([ZERO_UUID, ""])
    assert all(provider.get_port(i) is None for i in ids)
    assert provider.stats.snapshot()["delete_port"].errors == 0


# ---- readiness -----------------------------------------------------------------------------------------------


def test_wait_active_times_out_on_the_plain_peer(neutron_project: Project, provider: NeutronProvider) -> None:
    net = neutron_project.network(cidr="10.77.22.0/24")
    (port,) = provider.create_ports(spec(net))  # bound to the fake agent: DOWN for ever
    started = time.monotonic()
    with pytest.raises(TryAgainLater, match="still DOWN after 1s") as info:
        provider.wait_active(port.id, timeout=1)
    assert 0.9 < time.monotonic() - started < 4 and port.id in info.value.msg
    (unbound,) = provider.create_ports(spec(net, host_id=unique("nohost")))
    with pytest.raises(TryAgainLater, match="binding_failed"):
        provider.wait_active(unbound.id, timeout=30)
    with pytest.raises(NotFound):
        provider.wait_active(ZERO_UUID, timeout=1)


def test_wait_active_returns_the_port_the_agent_wired(neutron_lab: NeutronPeer, lab_project: Project) -> None:
    assert neutron_lab.agent_host
    net = lab_project.network(cidr="10.77.23.0/24")
    p = make(neutron_lab.host_endpoint, lab_project)
    try:
        (port,) = p.create_ports(
            PortSpec(
                network_id=net.network_id,
                host_id=neutron_lab.agent_host,
                tags=OWNER,
                security_groups=(net.security_group_id,),
            )
        )
        assert port.status == "DOWN"
        sdk_port = lab_project.net.get_port(port.id)
        sdk_net = lab_project.net.get_network(net.network_id)
        with lab_pod(neutron_lab, sdk_port, sdk_net):
            active = p.wait_active(port.id, timeout=60)
        assert active.status == "ACTIVE" and active.id == port.id and active.host_id == neutron_lab.agent_host
    finally:
        p.close()


def test_health_and_stats(neutron: NeutronPeer, provider: NeutronProvider) -> None:
    h = provider.health()
    assert h.ok and neutron.counting_endpoint.url in h.detail
    snap = provider.stats.snapshot()
    assert snap["health"].count == 1 and snap["health"].errors == 0
    assert dict(snap["health"].buckets)[float("inf")] == 1
