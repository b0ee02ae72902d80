"""The real executable against a running agent: every verb, every spec version, every mode,
with the kernel state inside the sandbox and connectivity asserted."""

from __future__ import annotations

import ipaddress
import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support.agent import AgentHandle
from tests.support.cni import conf, ip_json, ns_exec, ping, run_cni, sh, unique

pytestmark = pytest.mark.functional

VERSIONS = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
MODES = {"bridge": "fbridge", "routed": "frouted", "macvlan": "fmacvlan"}


def add(agent: AgentHandle, ns: str, network: str, version: str = "1.1.0", cid: str | None = None,
        **kw: object):
    cid = cid or unique("cid")
    r = run_cni("ADD", conf(network, version), socket=agent.socket, container_id=cid,
                netns=f"/run/netns/{ns}", **kw)  # type: ignore[arg-type]
    return cid, r


def delete(agent: AgentHandle, ns: str | None, network: str, cid: str, version: str = "1.1.0"):
    return run_cni("DEL", conf(network, version), socket=agent.socket, container_id=cid,
                   netns=f"/run/netns/{ns}" if ns else None)


def sandbox_iface(ns: str, ifname: str = "eth0") -> dict:
    links = ip_json(ns, "addr", "show", "dev", ifname)
    assert links, f"{ifname} missing in {ns}"
    return links[0]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("mode", list(MODES))
def test_add_check_del(agent: AgentHandle, sandbox: str, mode: str, version: str) -> None:
    network = MODES[mode]
    cid, r = add(agent, sandbox, network, version, args="K8S_POD_NAMESPACE=fx;K8S_POD_NAME=p1")
    assert r.code == 0, r.stdout + r.stderr
    res = r.json
    assert res["cniVersion"] == version
    sb_ifaces = [i for i in res["interfaces"] if i.get("sandbox")]
    assert len(sb_ifaces) == 1 and sb_ifaces[0]["name"] == "eth0"
    assert sb_ifaces[0]["sandbox"] == f"/run/netns/{sandbox}"
    mac = sb_ifaces[0]["mac"]
    idx = res["interfaces"].index(sb_ifaces[0])
    for ip in res["ips"]:
        assert ip["interface"] == idx
        assert ("version" in ip) == (version < "1.0.0")
    # kernel state inside the sandbox
    link = sandbox_iface(sandbox)
    assert link["address"] == mac
    assert link["operstate"] in ("UP", "UNKNOWN")
    assert link["mtu"] == {"bridge": 1400, "routed": 1450, "macvlan": 1500}[mode]
    have = {f"{a['local']}/{a['prefixlen']}" for a in link["addr_info"] if a.get("scope") != "link"}
    want = {ip["address"] for ip in res["ips"]}
    assert want <= have, (want, have)
    routes = ip_json(sandbox, "route", "show", "default")
    assert routes, "no default route in the sandbox"
    if mode == "routed":
        assert all(ipaddress.ip_interface(ip["address"]).network.prefixlen in (32, 128) for ip in res["ips"])
        neigh = ip_json(sandbox, "neigh", "show", "nud", "permanent")
        assert any(n["dst"] == "169.254.1.1" for n in neigh)
    if mode == "bridge":
        assert {ip["address"].split("/")[1] for ip in res["ips"]} == {"24", "64"}
        assert res.get("dns", {}).get("nameservers") == ["10.91.0.53"]
    # CHECK (0.4.0 and later)
    chk = run_cni("CHECK", dict(conf(network, version), prevResult=res), socket=agent.socket,
                  container_id=cid, netns=f"/run/netns/{sandbox}")
    if version in ("0.3.0", "0.3.1"):
        assert chk.code != 0 and chk.json["code"] == 1
    else:
        assert chk.code == 0, chk.stdout
    atts = agent.admin({"op": "attachments"})["attachments"]
    assert any(a["container_id"] == cid for a in atts)
    # DEL, twice
    for _ in range(2):
        d = delete(agent, sandbox, network, cid, version)
        assert d.code == 0 and d.stdout == "", d.stdout
    assert "eth0" not in {ln["ifname"] for ln in ip_json(sandbox, "link", "show")}
    assert all(a["container_id"] != cid for a in agent.admin({"op": "attachments"})["attachments"])


@pytest.mark.parametrize("mode", list(MODES))
def test_pod_to_pod_and_gateway(agent: AgentHandle, sandboxes: list[str], mode: str) -> None:
    network = MODES[mode]
    a, b = sandboxes[0], sandboxes[1]
    cid_a, ra = add(agent, a, network)
    cid_b, rb = add(agent, b, network)
    try:
        assert ra.code == 0 and rb.code == 0, ra.stdout + rb.stdout
        for ip in rb.json["ips"]:
            addr = ip["address"].split("/")[0]
            assert ping(a, addr), f"{mode}: {a} cannot ping {addr}"
        for ip in ra.json["ips"]:
            if ip.get("gateway"):
                assert ping(a, ip["gateway"]), f"{mode}: {a} cannot ping its gateway {ip['gateway']}"
    finally:
        delete(agent, a, network, cid_a)
        delete(agent, b, network, cid_b)


def test_host_side_objects(agent: AgentHandle, sandbox: str) -> None:
    node = agent.config_path.read_text().split('host_netns = "/run/netns/')[1].split('"')[0]
    cid, r = add(agent, sandbox, "fbridge")
    assert r.code == 0
    host = next(i for i in r.json["interfaces"] if not i.get("sandbox"))
    link = ip_json(node, "link", "show", "dev", host["name"])[0]
    assert link.get("master") == "cnf-br0"
    br_addrs = {a["local"] for a in ip_json(node, "addr", "show", "dev", "cnf-br0")[0]["addr_info"]}
    assert {"10.91.0.1", "fd00:91::1"} <= br_addrs
    delete(agent, sandbox, "fbridge", cid)
    assert not any(ln["ifname"] == host["name"] for ln in ip_json(node, "link", "show"))
    cid, r = add(agent, sandbox, "frouted")
    assert r.code == 0
    ip4 = next(ip["address"].split("/")[0] for ip in r.json["ips"] if "." in ip["address"])
    routes = ip_json(node, "route", "show", f"{ip4}/32")
    assert routes and routes[0]["dev"].startswith("cn")
    delete(agent, sandbox, "frouted", cid)
    assert not ip_json(node, "route", "show", f"{ip4}/32")


def test_static_ip_and_mac_from_every_source(agent: AgentHandle, sandbox: str) -> None:
    cases = [
        ({"args": "IP=10.91.0.77;MAC=02:aa:bb:cc:dd:01"}, {}, "10.91.0.77", "02:aa:bb:cc:dd:01"),
        ({}, {"runtimeConfig": {"ips": ["10.91.0.78/24"], "mac": "02:aa:bb:cc:dd:02"}},
         "10.91.0.78", "02:aa:bb:cc:dd:02"),
        ({}, {"runtimeConfig": {"io.kubernetes.cri.pod-annotations": {"cloudnic.io/ip": "10.91.0.79"}}},
         "10.91.0.79", None),
        ({}, {"runtimeConfig": {"IO.KUBERNETES.CRI.POD-ANNOTATIONS": {"skynet/ip": "10.91.0.80"}}},
         "10.91.0.80", None),
        ({}, {"runtimeConfig": {"io.kubernetes.cri.pod-annotations":
                                {"cni.projectcalico.org/ipAddrs": '["10.91.0.81"]'}}}, "10.91.0.81", None),
        ({}, {"args": {"cni": {"ips": ["10.91.0.82"]}}}, "10.91.0.82", None),
    ]
    for kw, extra, want_ip, want_mac in cases:
        cid = unique("cid")
        r = run_cni("ADD", conf("fbridge", **extra), socket=agent.socket, container_id=cid,
                    netns=f"/run/netns/{sandbox}", **kw)
        assert r.code == 0, (extra, kw, r.stdout)
        addrs = [ip["address"] for ip in r.json["ips"]]
        assert f"{want_ip}/24" in addrs, addrs
        link = sandbox_iface(sandbox)
        assert any(a["local"] == want_ip for a in link["addr_info"])
        if want_mac:
            assert link["address"] == want_mac
        assert delete(agent, sandbox, "fbridge", cid).code == 0


def test_taken_static_ip_is_refused_and_changes_nothing(agent: AgentHandle, sandboxes: list[str]) -> None:
    a, b = sandboxes[0], sandboxes[1]
    cid_a, ra = add(agent, a, "fbridge", args="IP=10.91.0.90;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-1")
    assert ra.code == 0
    try:
        before = agent.admin({"op": "attachments"})["attachments"]
        _, rb = add(agent, b, "fbridge", args="IP=10.91.0.90")
        assert rb.code == 1
        err = rb.json
        assert err["code"] == 100
        assert "10.91.0.90" in err["msg"] and "shop/web-1" in err["msg"], err
        assert "eth0" not in {ln["ifname"] for ln in ip_json(b, "link", "show")}
        assert agent.admin({"op": "attachments"})["attachments"] == before
    finally:
        delete(agent, a, "fbridge", cid_a)


def test_del_after_netns_is_gone(agent: AgentHandle) -> None:
    node = agent.config_path.read_text().split('host_netns = "/run/netns/')[1].split('"')[0]
    ns = unique("cnf-sb-")
    sh("ip", "netns", "add", ns)
    try:
        cid, r = add(agent, ns, "frouted", args="IP=10.92.0.50")
        assert r.code == 0
        host = next(i["name"] for i in r.json["interfaces"] if not i.get("sandbox"))
    finally:
        sh("ip", "netns", "del", ns)
    d = run_cni("DEL", conf("frouted"), socket=agent.socket, container_id=cid, netns=f"/run/netns/{ns}")
    assert d.code == 0, d.stdout
    assert not any(ln["ifname"] == host for ln in ip_json(node, "link", "show"))
    assert not ip_json(node, "route", "show", "10.92.0.50/32")
    # the address is free again
    with_ns = unique("cnf-sb-")
    sh("ip", "netns", "add", with_ns)
    try:
        cid2, r2 = add(agent, with_ns, "frouted", args="IP=10.92.0.50")
        assert r2.code == 0, r2.stdout
        delete(agent, with_ns, "frouted", cid2)
    finally:
        sh("ip", "netns", "del", with_ns)


def test_repeated_add_returns_the_same_attachment(agent: AgentHandle, sandbox: str) -> None:
    cid, r1 = add(agent, sandbox, "fbridge")
    _, r2 = add(agent, sandbox, "fbridge", cid=cid)
    assert r1.code == 0 and r2.code == 0
    assert r1.json["ips"] == r2.json["ips"]
    assert delete(agent, sandbox, "fbridge", cid).code == 0


def test_status_and_gc(agent: AgentHandle, sandboxes: list[str]) -> None:
    st = run_cni("STATUS", conf("fbridge"), socket=agent.socket, drop_env=("CNI_CONTAINERID", "CNI_IFNAME"))
    assert st.code == 0 and st.stdout == ""
    old = run_cni("STATUS", conf("fbridge", "1.0.0"), socket=agent.socket)
    assert old.code == 1 and old.json["code"] == 1
    # ftiny is a /30: one usable address besides the gateway → STATUS reports exhaustion
    cid_t, rt = add(agent, sandboxes[3], "ftiny")
    assert rt.code == 0, rt.stdout
    st = run_cni("STATUS", conf("ftiny"), socket=agent.socket)
    assert st.code == 1 and st.json["code"] == 50 and "ftiny" in st.json["msg"]
    _, full = add(agent, sandboxes[2], "ftiny")
    assert full.code == 1 and full.json["code"] == 101
    assert delete(agent, sandboxes[3], "ftiny", cid_t).code == 0
    assert run_cni("STATUS", conf("ftiny"), socket=agent.socket).code == 0
    # GC keeps the valid attachment and releases the other
    keep, rk = add(agent, sandboxes[0], "fbridge")
    stale, rs = add(agent, sandboxes[1], "fbridge")
    assert rk.code == 0 and rs.code == 0
    gc_conf = conf("fbridge", **{"cni.dev/valid-attachments": [{"containerID": keep, "ifname": "eth0"}]})
    g = run_cni("GC", gc_conf, socket=agent.socket, drop_env=("CNI_CONTAINERID", "CNI_IFNAME"))
    assert g.code == 0, g.stdout
    ids = {a["container_id"] for a in agent.admin({"op": "attachments"})["attachments"]}
    assert keep in ids and stale not in ids
    assert "eth0" not in {ln["ifname"] for ln in ip_json(sandboxes[1], "link", "show")}
    assert "eth0" in {ln["ifname"] for ln in ip_json(sandboxes[0], "link", "show")}
    assert delete(agent, sandboxes[0], "fbridge", keep).code == 0


def test_parallel_adds_get_distinct_addresses(agent: AgentHandle) -> None:
    names = [unique("cnf-par-") for _ in range(12)]
    for n in names:
        sh("ip", "netns", "add", n)
    try:
        with ThreadPoolExecutor(12) as ex:
            results = list(ex.map(lambda n: add(agent, n, "fbridge"), names))
        assert all(r.code == 0 for _, r in results), [r.stdout for _, r in results if r.code]
        addrs = [ip["address"] for _, r in results for ip in r.json["ips"]]
        assert len(addrs) == len(set(addrs)) == 24
        with ThreadPoolExecutor(12) as ex:
            dels = list(ex.map(lambda p: delete(agent, p[0], "fbridge", p[1][0]), zip(names, results, strict=True)))
        assert all(d.code == 0 for d in dels)
    finally:
        for n in names:
            sh("ip", "netns", "del", n, check=False)


def test_agent_restart_keeps_attachments(agent: AgentHandle, sandbox: str, tmp_path) -> None:
    from tests.support.agent import start_agent, stop_agent
    cid, r = add(agent, sandbox, "fbridge")
    assert r.code == 0
    assert stop_agent(agent) == 0
    restarted = start_agent(agent.config_path.parent, agent.config_path.read_text())
    agent.proc = restarted.proc
    chk = run_cni("CHECK", dict(conf("fbridge"), prevResult=r.json), socket=agent.socket, container_id=cid,
                  netns=f"/run/netns/{sandbox}")
    assert chk.code == 0, chk.stdout
    assert delete(agent, sandbox, "fbridge", cid).code == 0


def test_agent_down_gives_try_again(tmp_path) -> None:
    sock = str(tmp_path / "nobody.sock")
    r = run_cni("ADD", conf("x"), socket=sock, container_id="c1", netns="/proc/self/ns/net")
    assert r.code == 1 and r.json["code"] == 11
    s = run_cni("STATUS", conf("x"), socket=sock)
    assert s.code == 1 and s.json["code"] == 50
    v = run_cni("VERSION", {"cniVersion": "0.4.0"}, socket=sock)
    assert v.code == 0 and v.json["cniVersion"] == "0.4.0" and "1.1.0" in v.json["supportedVersions"]


def test_check_detects_kernel_drift(agent: AgentHandle, sandbox: str) -> None:
    cid, r = add(agent, sandbox, "fbridge")
    assert r.code == 0
    addr = next(ip["address"] for ip in r.json["ips"] if "." in ip["address"])
    ns_exec(sandbox, "ip", "addr", "del", addr, "dev", "eth0")
    chk = run_cni("CHECK", dict(conf("fbridge"), prevResult=r.json), socket=agent.socket, container_id=cid,
                  netns=f"/run/netns/{sandbox}")
    assert chk.code == 1 and addr.split("/")[0] in chk.json["msg"], chk.stdout
    assert delete(agent, sandbox, "fbridge", cid).code == 0


def test_cli_status_and_attachments(agent: AgentHandle, sandbox: str) -> None:
    import subprocess
    import sys
    cid, r = add(agent, sandbox, "fbridge", args="K8S_POD_NAMESPACE=shop;K8S_POD_NAME=cli-pod")
    assert r.code == 0
    try:
        out = subprocess.run([sys.executable, "-m", "cloudnic.cli.main", "--socket", agent.socket, "status"],
                             capture_output=True, text=True, check=True).stdout
        assert "ready" in out and "fbridge" in out and "10.91.0.0/24" in out
        out = subprocess.run([sys.executable, "-m", "cloudnic.cli.main", "--socket", agent.socket,
                              "attachments"], capture_output=True, text=True, check=True).stdout
        ip4 = next(ip["address"] for ip in r.json["ips"] if "." in ip["address"])
        assert cid[:12] in out and ip4 in out
        js = json.loads(subprocess.run([sys.executable, "-m", "cloudnic.cli.main", "--socket", agent.socket,
                                        "status", "--json"], capture_output=True, text=True, check=True).stdout)
        assert js["store"]["attachments"] >= 1
    finally:
        delete(agent, sandbox, "fbridge", cid)


def test_request_id_ties_runtime_log_to_agent_log(agent: AgentHandle, sandbox: str) -> None:
    _, r = add(agent, sandbox, "fbridge", args="IP=10.200.0.1")
    assert r.code == 1 and r.json["code"] == 100
    line = next(ln for ln in r.stderr.splitlines() if ln.startswith("cloudnic["))
    rid = line.split("[", 1)[1].split("]", 1)[0]
    assert len(rid) == 16 and "code 100" in line
    records = [json.loads(ln) for ln in agent.log_text().splitlines() if ln.startswith("{")]
    mine = [rec for rec in records if rec.get("rid") == rid]
    assert any(rec["msg"] == "request failed" and rec.get("code") == 100 for rec in mine), mine


def test_add_after_another_plugin_passes_its_result_through(agent: AgentHandle, sandbox: str) -> None:
    prev = {"cniVersion": "1.0.0", "interfaces": [{"name": "lo", "sandbox": f"/run/netns/{sandbox}"}],
            "ips": [{"address": "127.0.0.1/8", "interface": 0}], "dns": {"nameservers": ["10.0.0.53"]}}
    cid = unique("cid")
    r = run_cni("ADD", conf("fbridge", "1.0.0", prevResult=prev), socket=agent.socket, container_id=cid,
                netns=f"/run/netns/{sandbox}")
    assert r.code == 0, r.stdout
    res = r.json
    assert res["interfaces"][0]["name"] == "lo" and res["ips"][0]["address"] == "127.0.0.1/8"
    eth0 = next(i for i, itf in enumerate(res["interfaces"]) if itf["name"] == "eth0")
    ours = [ip for ip in res["ips"] if ip["address"].startswith("10.91.")]
    assert ours and all(ip["interface"] == eth0 for ip in ours)
    assert delete(agent, sandbox, "fbridge", cid).code == 0


def test_static_ip_of_a_sandbox_gone_without_del_is_reclaimed(agent: AgentHandle, sandbox: str) -> None:
    gone = unique("cnf-sb-")
    sh("ip", "netns", "add", gone)
    cid_old, r = add(agent, gone, "fbridge", args="IP=10.91.0.120")
    assert r.code == 0
    sh("ip", "netns", "del", gone)               # the sandbox vanished; its DEL never came
    cid_new, r2 = add(agent, sandbox, "fbridge", args="IP=10.91.0.120")
    assert r2.code == 0, r2.stdout
    ids = {a["container_id"] for a in agent.admin({"op": "attachments"})["attachments"]}
    assert cid_old not in ids and cid_new in ids
    assert "releasing the attachment of a sandbox that is gone" in agent.log_text()
    assert delete(agent, None, "fbridge", cid_old).code == 0           # the runtime's late DEL is harmless
    assert delete(agent, sandbox, "fbridge", cid_new).code == 0
