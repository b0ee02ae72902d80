"""Hostile CNI_* environments: missing and malformed variables, CNI_NETNS that is no sandbox, CNI_ARGS."""

from __future__ import annotations

from tests.hostile.hostile_case import Case, tag

BAD_UTF8 = "\udcff\udcfe"   # os.fsencode turns these into the raw bytes 0xff 0xfe

COMMAND = [
    Case("missing-command", 4, "CNI_COMMAND", drop=("CNI_COMMAND",)),
    Case("unknown-command", 4, "CNI_COMMAND", command="FROB"),
    Case("command-empty", 4, "CNI_COMMAND", command=""),
    Case("command-lowercase", 4, "CNI_COMMAND", command="add"),
    Case("command-trailing-space", 4, "CNI_COMMAND", command="ADD "),
    Case("command-huge", 4, "CNI_COMMAND", command="A" * 100000),
    Case("command-non-utf8", 4, "CNI_COMMAND", command="ADD" + BAD_UTF8),
    Case("command-control-chars", 4, "CNI_COMMAND", command="ADD\x1b[2J"),
]

CONTAINER_ID = [
    Case("missing-containerid", 4, "CNI_CONTAINERID", drop=("CNI_CONTAINERID",)),
    Case("bad-containerid", 4, "CNI_CONTAINERID", env={"CNI_CONTAINERID": "a/b"}),
    Case("containerid-empty", 4, "CNI_CONTAINERID", env={"CNI_CONTAINERID": ""}),
    Case("containerid-dotdot", 4, "CNI_CONTAINERID", env={"CNI_CONTAINERID": ".."}),
    Case("containerid-leading-dash", 4, "CNI_CONTAINERID", env={"CNI_CONTAINERID": "-rf"}),
    Case("containerid-space", 4, "CNI_CONTAINERID", env={"CNI_CONTAINERID": "a b"}),
    Case("containerid-semicolon", 4, "CNI_CONTAINERID", env={"CNI_CONTAINERID": "a;reboot"}),
    Case("containerid-newline", 4, "CNI_CONTAINERID", env={"CNI_CONTAINERID": "a\nb"}),
    Case("containerid-shell", 4, "CNI_CONTAINERID", env={"CNI_CONTAINERID": "$(reboot)"}),
    Case("containerid-unicode", 4, "CNI_CONTAINERID", env={"CNI_CONTAINERID": "ünïcode"}),
    Case("containerid-non-utf8", 4, "CNI_CONTAINERID", env={"CNI_CONTAINERID": "abc" + BAD_UTF8}),
    Case("containerid-too-long", 4, "CNI_CONTAINERID", env={"CNI_CONTAINERID": "a" * 1025}),
    Case("containerid-huge", 4, "CNI_CONTAINERID", env={"CNI_CONTAINERID": "a" * 120000}),
    Case("containerid-sql", 4, "CNI_CONTAINERID", env={"CNI_CONTAINERID": "x'; DROP TABLE attachments;--"}),
]

IFNAME = [
    Case("missing-ifname", 4, "CNI_IFNAME", drop=("CNI_IFNAME",)),
    Case("long-ifname", 4, "CNI_IFNAME", env={"CNI_IFNAME": "a" * 16}),
    Case("ifname-slash", 4, "CNI_IFNAME", env={"CNI_IFNAME": "et/h0"}),
    Case("ifname-empty", 4, "CNI_IFNAME", env={"CNI_IFNAME": ""}),
    Case("ifname-dot", 4, "CNI_IFNAME", env={"CNI_IFNAME": "."}),
    Case("ifname-dotdot", 4, "CNI_IFNAME", env={"CNI_IFNAME": ".."}),
    Case("ifname-space", 4, "CNI_IFNAME", env={"CNI_IFNAME": "eth 0"}),
    Case("ifname-colon", 4, "CNI_IFNAME", env={"CNI_IFNAME": "eth0:1"}),
    Case("ifname-tab", 4, "CNI_IFNAME", env={"CNI_IFNAME": "eth\t0"}),
    Case("ifname-newline", 4, "CNI_IFNAME", env={"CNI_IFNAME": "eth0\n"}),
    Case("ifname-nbsp", 4, "CNI_IFNAME", env={"CNI_IFNAME": "eth\xa00"}),
    Case("ifname-multibyte-too-long", 4, "CNI_IFNAME", env={"CNI_IFNAME": "é" * 8}),
    Case("ifname-non-utf8", 4, "CNI_IFNAME", env={"CNI_IFNAME": "e" + BAD_UTF8}),
    Case("ifname-exists", 7, "CNI_IFNAME", env={"CNI_IFNAME": "dummy0"}),
    Case("ifname-lo", 7, "CNI_IFNAME", env={"CNI_IFNAME": "lo"}),
]

NETNS = [
    Case("missing-netns", 4, "CNI_NETNS", drop=("CNI_NETNS",)),
    Case("netns-empty", 4, "CNI_NETNS", env={"CNI_NETNS": ""}),
    Case("netns-does-not-exist", 4, "CNI_NETNS", env={"CNI_NETNS": "/run/netns/cnh-no-such-ns"}),
    Case("netns-regular-file", 4, "CNI_NETNS", env={"CNI_NETNS": "/etc/hostname"}),
    Case("netns-regular-file-tmp", 4, "CNI_NETNS", env={"CNI_NETNS": "{file}"}),
    Case("netns-regular-file-in-run-netns", 4, "CNI_NETNS", env={"CNI_NETNS": "{runfile}"}),
    Case("netns-symlink-to-file", 4, "CNI_NETNS", env={"CNI_NETNS": "{link}"}),
    Case("netns-directory", 4, "CNI_NETNS", env={"CNI_NETNS": "{dir}"}),
    Case("netns-run-netns-dir", 4, "CNI_NETNS", env={"CNI_NETNS": "/run/netns"}),
    Case("netns-fifo", 4, "CNI_NETNS", env={"CNI_NETNS": "{fifo}"}),
    Case("netns-unix-socket", 4, "CNI_NETNS", env={"CNI_NETNS": "{sock}"}),
    Case("netns-dev-null", 4, "CNI_NETNS", env={"CNI_NETNS": "/dev/null"}),
    Case("netns-dev-zero-check", 4, "CNI_NETNS", env={"CNI_NETNS": "/dev/zero"}, command="CHECK"),
    Case("netns-uts-ns", 4, "CNI_NETNS", env={"CNI_NETNS": "/proc/self/ns/uts"}),
    Case("netns-mnt-ns", 4, "CNI_NETNS", env={"CNI_NETNS": "/proc/self/ns/mnt"}),
    Case("netns-pid-ns-check", 4, "CNI_NETNS", env={"CNI_NETNS": "/proc/self/ns/pid"}, command="CHECK"),
    Case("netns-proc-file", 4, "CNI_NETNS", env={"CNI_NETNS": "/proc/self/status"}),
    Case("netns-pid1-unopenable", 4, "CNI_NETNS", env={"CNI_NETNS": "/proc/1/ns/net"}),
    Case("netns-relative", 4, "CNI_NETNS", env={"CNI_NETNS": "run/netns/x"}),
    Case("netns-dotdot", 4, "CNI_NETNS", env={"CNI_NETNS": "/run/netns/../../etc/hostname"}),
    Case("netns-newline", 4, "CNI_NETNS", env={"CNI_NETNS": "/run/netns/{sandbox}\n"}),
    Case("netns-too-long", 4, "CNI_NETNS", env={"CNI_NETNS": "/" + "a" * 5000}),
    Case("netns-non-utf8", 4, "CNI_NETNS", env={"CNI_NETNS": "/run/netns/" + BAD_UTF8}),
    Case("netns-is-the-host", 4, "node's own", env={"CNI_NETNS": "/proc/self/ns/net"}),
    Case("netns-is-the-host-del", 4, "node's own", env={"CNI_NETNS": "/proc/self/ns/net"}, command="DEL"),
    Case("netns-is-the-host-check", 4, "node's own", env={"CNI_NETNS": "/proc/self/ns/net"}, command="CHECK"),
    Case("netns-is-the-node", 4, "node's own", env={"CNI_NETNS": "/run/netns/{node}"}),
    Case("netns-is-the-node-del", 4, "node's own", env={"CNI_NETNS": "/run/netns/{node}"}, command="DEL"),
]

CNI_ARGS = [
    Case("cni-args-malformed", 4, "CNI_ARGS", args="IgnoreUnknown=1;garbage"),
    Case("cni-args-empty-key", 4, "CNI_ARGS", args="=x"),
    Case("cni-args-only-garbage", 4, "CNI_ARGS", args=";;;garbage;;"),
    Case("cni-args-non-utf8", 4, "CNI_ARGS", args="IP=10.91.0.20;X=" + BAD_UTF8),
    Case("cni-args-ip-bad", 4, "IP", args="IP=10.91.0.999"),
    Case("cni-args-ip-garbage", 4, "IP", args="IP=garbage"),
    Case("cni-args-ip-two-v4", 4, "IP", args="IP=10.91.0.20,10.91.0.21"),
    Case("cni-args-ip-dup", 4, "IP", args="IP=10.91.0.20,10.91.0.20"),
    Case("cni-args-ip-bad-prefix", 4, "IP", args="IP=10.91.0.20/33"),
    Case("cni-args-ip-loopback", 4, "IP", args="IP=::1"),
    Case("cni-args-ip-multicast", 4, "IP", args="IP=224.0.0.1"),
    Case("cni-args-ip-link-local", 4, "IP", args="IP=fe80::1"),
    Case("cni-args-ip-unspecified", 4, "IP", args="IP=0.0.0.0"),
    Case("cni-args-ip-broadcast-all", 4, "IP", args="IP=255.255.255.255"),
    Case("cni-args-ip-zone", 4, "IP", args="IP=fd00:91::20%eth0"),
    Case("cni-args-ip-last-wins", 4, "IP", args="IP=10.91.0.20;IP=nope"),
    Case("cni-args-ip-huge", 4, "IP", args="IP=" + "1" * 100000),
    Case("cni-args-mac-bad", 4, "MAC", args="MAC=nope"),
    Case("cni-args-mac-multicast", 4, "MAC", args="MAC=01:00:5e:00:00:01"),
    Case("cni-args-mac-zero", 4, "MAC", args="MAC=00:00:00:00:00:00"),
    Case("cni-args-mac-short", 4, "MAC", args="MAC=02:aa:00:00:00"),
    Case("cni-args-unknown-key-bad-ip", 4, "IP", args="FOO=bar;IP=banana"),
    Case("cni-args-ignoreunknown-bad-mac", 4, "MAC", args="IgnoreUnknown=1;FOO=bar;MAC=zz"),
    Case("cni-args-pod-name-bad", 4, "K8S_POD_NAME", args="IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=a b"),
    Case("cni-args-pod-name-huge", 4, "K8S_POD_NAME", args="IgnoreUnknown=1;K8S_POD_NAME=" + "p" * 300),
    Case("cni-args-pod-ns-slash", 4, "K8S_POD_NAMESPACE", args="IgnoreUnknown=1;K8S_POD_NAMESPACE=a/b"),
    Case("cni-args-pod-ns-control", 4, "K8S_POD_NAMESPACE", args="K8S_POD_NAMESPACE=ns\x1b[2J"),
    Case("cni-args-pod-uid-bad", 4, "K8S_POD_UID", args="IgnoreUnknown=1;K8S_POD_UID=\n"),
    Case("cni-args-infra-id-bad", 4, "K8S_POD_INFRA_CONTAINER_ID", args="K8S_POD_INFRA_CONTAINER_ID=../x"),
    Case("cni-args-huge", 4, "CNI_ARGS", args="IgnoreUnknown=1;" + "x" * 120000),
    # one variable may not exceed 128 KiB (the kernel's MAX_ARG_STRLEN): 12 of 100 KB pass 1 MiB together
    Case("env-oversized", 5, "max_request_bytes", env={f"CNI_PAD_{i}": "x" * 100000 for i in range(12)}),
    Case("ip-outside-network", 100, "10.200.0.5", args="IP=10.200.0.5"),
    Case("ip-network-address", 100, "10.91.0.0", args="IP=10.91.0.0"),
    Case("ip-broadcast", 100, "10.91.0.255", args="IP=10.91.0.255"),
    Case("ip-gateway", 100, "10.91.0.1", args="IP=10.91.0.1"),
    Case("ip-excluded", 100, "10.91.0.5", args="IP=10.91.0.5"),
    Case("ip6-outside", 100, "fd00:99::5", args="IP=fd00:99::5"),
    Case("ip-taken", 100, "10.91.0.250", args="IP=10.91.0.250"),
    Case("mac-taken", 100, "02:aa:00:00:00:fa", args="MAC=02:aa:00:00:00:fa"),
    Case("shim-timeout-bad", 4, "CLOUDNIC_TIMEOUT_MS", env={"CLOUDNIC_TIMEOUT_MS": "-5"}),
    Case("shim-connect-timeout-huge", 4, "CLOUDNIC_CONNECT_TIMEOUT_MS",
         env={"CLOUDNIC_CONNECT_TIMEOUT_MS": "9" * 40}),
]

CASES = (tag("command", COMMAND) + tag("containerid", CONTAINER_ID) + tag("ifname", IFNAME)
         + tag("netns", NETNS) + tag("cni_args", CNI_ARGS))
