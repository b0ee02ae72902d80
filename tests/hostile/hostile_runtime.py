"""Hostile runtimeConfig capabilities, args.cni, pod annotations, prevResult (CHECK/DEL) and GC lists."""

from __future__ import annotations

from typing import Any

from tests.hostile.hostile_case import Case, ann, base, rc, tag, with_

CALICO = "cni.projectcalico.org/ipAddrs"


def prev(result: Any, version: str = "1.1.0") -> dict[str, Any]:
    return with_(cniVersion=version, prevResult=result)


def gc(items: Any) -> dict[str, Any]:
    return with_(**{"cni.dev/valid-attachments": items})


RUNTIME_CONFIG = [
    Case("rc-ips-not-list", 7, "ips", conf=rc(ips="10.91.0.20")),
    Case("rc-ips-bad", 7, "ips", conf=rc(ips=["10.91.0.300"])),
    Case("rc-ips-two-v4", 7, "ips", conf=rc(ips=["10.91.0.20", "10.91.0.21"])),
    Case("rc-ips-number-item", 7, "ips", conf=rc(ips=[5])),
    Case("rc-ips-null-item", 7, "ips", conf=rc(ips=[None])),
    Case("rc-ips-nested", 7, "ips", conf=rc(ips=[["10.91.0.20"]])),
    Case("rc-ips-object", 7, "ips", conf=rc(ips={"ip": "10.91.0.20"})),
    Case("rc-ips-dup", 7, "ips", conf=rc(ips=["10.91.0.20", "10.91.0.20"])),
    Case("rc-ips-loopback", 7, "ips", conf=rc(ips=["127.0.0.1"])),
    Case("rc-ips-bad-prefix", 7, "ips", conf=rc(ips=["10.91.0.20/40"])),
    Case("rc-ips-go-case", 7, "IPs", conf=rc(IPs=["nope"])),
    Case("rc-ips-outside", 100, "10.200.0.5", conf=rc(ips=["10.200.0.5"])),
    Case("rc-mac-bad", 7, "mac", conf=rc(mac="02:zz:00:00:00:01")),
    Case("rc-mac-multicast", 7, "mac", conf=rc(mac="01:00:5e:00:00:01")),
    Case("rc-mac-number", 7, "mac", conf=rc(mac=5)),
    Case("rc-mac-list", 7, "mac", conf=rc(mac=["02:aa:00:00:00:01"])),
    Case("rc-mac-empty", 7, "mac", conf=rc(mac="")),
    Case("rc-mac-zero", 7, "mac", conf=rc(mac="00:00:00:00:00:00")),
    Case("rc-mac-too-long", 7, "mac", conf=rc(mac="02:aa:00:00:00:01:02")),
    Case("rc-portMappings-string", 7, "portMappings", conf=rc(portMappings="80:80")),
    Case("rc-portMappings-number-item", 7, "portMappings", conf=rc(portMappings=[1])),
    Case("rc-portMappings-object", 7, "portMappings", conf=rc(portMappings={"hostPort": 80})),
    Case("rc-portMappings-hostPort-string", 7, "hostPort",
         conf=rc(portMappings=[{"hostPort": "x", "containerPort": 80, "protocol": "tcp"}])),
    Case("rc-portMappings-port-range", 7, "containerPort",
         conf=rc(portMappings=[{"hostPort": 8080, "containerPort": 70000, "protocol": "tcp"}])),
    Case("rc-portMappings-protocol", 7, "protocol",
         conf=rc(portMappings=[{"hostPort": 8080, "containerPort": 80, "protocol": 6}])),
    Case("rc-bandwidth-string", 7, "bandwidth", conf=rc(bandwidth="10mbit")),
    Case("rc-bandwidth-rate-string", 7, "ingressRate", conf=rc(bandwidth={"ingressRate": "fast"})),
    Case("rc-bandwidth-negative", 7, "egressBurst", conf=rc(bandwidth={"egressBurst": -1})),
]

ARGS_CNI = [
    Case("args-cni-ips-bad", 7, "ips", conf=with_(args={"cni": {"ips": ["x.y"]}})),
    Case("args-cni-not-object", 7, "args.cni", conf=with_(args={"cni": "x"})),
    Case("args-cni-list", 7, "args.cni", conf=with_(args={"cni": [1]})),
    Case("args-cni-ips-string", 7, "args.cni.ips", conf=with_(args={"cni": {"ips": "10.91.0.20"}})),
    Case("args-cni-ips-number-item", 7, "args.cni.ips", conf=with_(args={"cni": {"ips": [5]}})),
    Case("args-cni-ips-two-v6", 7, "args.cni.ips", conf=with_(args={"cni": {"ips": ["fd00:91::20", "fd00:91::21"]}})),
    Case("args-cni-mac-number", 7, "args.cni.mac", conf=with_(args={"cni": {"mac": 5}})),
    Case("args-cni-mac-bad", 7, "args.cni.mac", conf=with_(args={"cni": {"mac": "zz"}})),
    Case("args-cni-ips-outside", 100, "10.200.0.9", conf=with_(args={"cni": {"ips": ["10.200.0.9"]}})),
]

ANNOTATIONS = [
    Case("ann-ip-bad", 7, "cloudnic.io/ip", conf=ann({"cloudnic.io/ip": "10.91.0.300"})),
    Case("ann-skynet-ip-bad", 7, "skynet/ip", conf=ann({"skynet/ip": "banana"})),
    Case("ann-calico-not-json", 7, "ipAddrs", conf=ann({CALICO: "[10.91.0.5"})),
    Case("ann-unknown-subnet", 102, "10.55.0.0/24", conf=ann({"cloudnic.io/subnet": "10.55.0.0/24"})),
    Case("ann-unknown-network", 102, "ghost", conf=ann({"cloudnic.io/network": "ghost"})),
    Case("ann-not-object", 7, "pod-annotations", conf=ann("cloudnic.io/ip=10.91.0.20")),
    Case("ann-list", 7, "pod-annotations", conf=ann([{"cloudnic.io/ip": "10.91.0.20"}])),
    Case("ann-number", 7, "pod-annotations", conf=ann(5)),
    Case("ann-value-number", 7, "cloudnic.io/ip", conf=ann({"cloudnic.io/ip": 5})),
    Case("ann-value-null", 7, "cloudnic.io/subnet", conf=ann({"cloudnic.io/subnet": None})),
    Case("ann-value-list", 7, "cloudnic.io/ip", conf=ann({"cloudnic.io/ip": ["10.91.0.20"]})),
    Case("ann-value-object", 7, "cloudnic.io/network", conf=ann({"cloudnic.io/network": {"name": "fbridge"}})),
    Case("ann-ip-two-v4", 7, "cloudnic.io/ip", conf=ann({"cloudnic.io/ip": "10.91.0.20,10.91.0.21"})),
    Case("ann-ip-multicast", 7, "cloudnic.io/ip", conf=ann({"cloudnic.io/ip": "239.1.1.1"})),
    Case("ann-ip-outside", 100, "10.200.0.7", conf=ann({"cloudnic.io/ip": "10.200.0.7"})),
    Case("ann-ip-gateway", 100, "10.91.0.1", conf=ann({"cloudnic.io/ip": "10.91.0.1"})),
    Case("ann-calico-object", 7, "ipAddrs", conf=ann({CALICO: '{"ip": "10.91.0.5"}'})),
    Case("ann-calico-number-item", 7, "ipAddrs", conf=ann({CALICO: "[5]"})),
    Case("ann-calico-bad-item", 7, "ipAddrs", conf=ann({CALICO: '["nope"]'})),
    Case("ann-calico-string", 7, "ipAddrs", conf=ann({CALICO: '"10.91.0.5"'})),
    Case("ann-calico-deep", 7, "ipAddrs", conf=ann({CALICO: "[" * 100000 + "]" * 100000})),
    Case("ann-calico-nan", 7, "ipAddrs", conf=ann({CALICO: "[NaN]"})),
    Case("ann-skynet-subnet-unknown", 102, "s-ghost", conf=ann({"skynet/subnet_id": "s-ghost"})),
    Case("ann-skynet-network-unknown", 102, "n-ghost", conf=ann({"skynet/network_id": "n-ghost"})),
    Case("ann-subnet-garbage", 102, "not a subnet", conf=ann({"cloudnic.io/subnet": "not a subnet"})),
    Case("ann-network-huge", 7, "cloudnic.io/network", conf=ann({"cloudnic.io/network": "g" * 50000})),
    Case("ann-subnet-huge", 7, "skynet/subnet_id", conf=ann({"skynet/subnet_id": "s" * 256})),
    Case("ann-security-groups-huge", 7, "cloudnic.io/security-groups",
         conf=ann({"cloudnic.io/security-groups": "sg1," + "g" * 300})),
]

PREV_RESULT = [
    Case("check-no-attachment", 3, "ADD it first", command="CHECK"),
    Case("check-bad-prevresult", 7, "prevResult", command="CHECK",
         conf=with_(prevResult={"ips": [{"address": "not-an-ip"}]})),
    Case("check-prev-string", 7, "prevResult", command="CHECK", conf=prev("x")),
    Case("check-prev-list", 7, "prevResult", command="CHECK", conf=prev([1])),
    Case("check-prev-ips-string", 7, "prevResult.ips", command="CHECK", conf=prev({"ips": "x"})),
    Case("check-prev-ips-number", 7, "prevResult.ips[0]", command="CHECK", conf=prev({"ips": [5]})),
    Case("check-prev-ip-no-prefix", 7, "prevResult.ips[0].address", command="CHECK",
         conf=prev({"ips": [{"address": "10.91.0.20"}]})),
    Case("check-prev-ip-missing", 7, "prevResult.ips[0].address", command="CHECK", conf=prev({"ips": [{}]})),
    Case("check-prev-gateway-bad", 7, "gateway", command="CHECK",
         conf=prev({"ips": [{"address": "10.91.0.20/24", "gateway": "x"}]})),
    Case("check-prev-interface-index", 7, "interface", command="CHECK",
         conf=prev({"ips": [{"address": "10.91.0.20/24", "interface": 5}]})),
    Case("check-prev-interface-negative", 7, "interface", command="CHECK",
         conf=prev({"interfaces": [{"name": "eth0"}], "ips": [{"address": "10.91.0.20/24", "interface": -1}]})),
    Case("check-prev-version-mismatch", 7, "version", command="CHECK",
         conf=prev({"ips": [{"address": "10.91.0.20/24", "version": "6"}]}, "0.4.0")),
    Case("check-prev-interfaces-string", 7, "prevResult.interfaces", command="CHECK",
         conf=prev({"interfaces": "eth0"})),
    Case("check-prev-interface-name-number", 7, "name", command="CHECK", conf=prev({"interfaces": [{"name": 5}]})),
    Case("check-prev-interface-mtu-negative", 7, "mtu", command="CHECK",
         conf=prev({"interfaces": [{"name": "eth0", "mtu": -1}]})),
    Case("check-prev-routes-dst-bad", 7, "dst", command="CHECK", conf=prev({"routes": [{"dst": "x"}]})),
    Case("check-prev-routes-dst-missing", 7, "dst", command="CHECK", conf=prev({"routes": [{"gw": "10.91.0.1"}]})),
    Case("check-prev-routes-gw-bad", 7, "gw", command="CHECK",
         conf=prev({"routes": [{"dst": "0.0.0.0/0", "gw": "x"}]})),
    Case("check-prev-dns-string", 7, "dns", command="CHECK", conf=prev({"dns": "10.0.0.53"})),
    Case("check-prev-dns-nameserver-number", 7, "nameservers", command="CHECK",
         conf=prev({"dns": {"nameservers": [5]}})),
    Case("check-prev-cniVersion-bad", 7, "prevResult.cniVersion", command="CHECK",
         conf=prev({"cniVersion": "9.9.9"})),
    Case("check-old-version", 1, "CHECK", command="CHECK", conf=with_(cniVersion="0.3.1")),
    Case("del-prev-string", 7, "prevResult", command="DEL", conf=prev("x")),
    Case("del-prev-list", 7, "prevResult", command="DEL", conf=prev([{"ips": []}])),
    Case("add-prev-ips-object", 7, "prevResult.ips", conf=prev({"ips": {"address": "10.91.0.20/24"}})),
]

VERBS = [
    Case("gc-old-version", 1, "1.1.0", command="GC", conf=with_(cniVersion="1.0.0")),
    Case("status-old-version", 1, "1.1.0", command="STATUS", conf=with_(cniVersion="0.4.0")),
    Case("gc-valid-attachments-string", 7, "valid-attachments", command="GC", conf=gc("holder")),
    Case("gc-valid-attachments-number-item", 7, "valid-attachments", command="GC", conf=gc([5])),
    Case("gc-valid-attachments-empty-object", 7, "containerID", command="GC", conf=gc([{}])),
    Case("gc-valid-attachments-id-number", 7, "containerID", command="GC", conf=gc([{"containerID": 5}])),
    Case("gc-valid-attachments-ifname-number", 7, "ifname", command="GC",
         conf=gc([{"containerID": "holder", "ifname": 5}])),
    Case("gc-bad-config", 7, "name", command="GC", conf=with_(name=5)),
    Case("status-bad-config", 6, "JSON", command="STATUS", conf=b"{"),
    Case("del-bad-config", 7, "mtu", command="DEL", conf=with_(mtu=-5)),
    Case("del-missing-containerid", 4, "CNI_CONTAINERID", command="DEL", drop=("CNI_CONTAINERID",)),
    Case("version-check-of-base", 7, "type", command="CHECK", conf={k: v for k, v in base().items() if k != "type"}),
]

CASES = (tag("runtime_config", RUNTIME_CONFIG) + tag("args_cni", ARGS_CNI) + tag("annotations", ANNOTATIONS)
         + tag("prev_result", PREV_RESULT) + tag("verbs", VERBS))
