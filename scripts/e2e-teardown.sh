#!/bin/bash
# Undo what the e2e tests and scripts/e2e-setup.sh leave on the machine. Packages stay installed.
#   e2e-teardown.sh          remove leftovers of a killed run: podman containers, the private
#                            containerd (its pods first), cne-* netns and links, libcni cache
#                            entries, portmap's empty top-level chain; keep the caches
#                            (cnitool build, images) so the next run is fast
#   e2e-teardown.sh --purge  also remove $CLOUDNIC_E2E_DIR entirely (podman storage included)
set -u
E2E=${CLOUDNIC_E2E_DIR:-/var/tmp/cloudnic-e2e}
PFX=cne-
PURGE=0
[ "${1:-}" = "--purge" ] && PURGE=1
log() { printf 'e2e-teardown: %s\n' "$*" >&2; }

# ---- podman: its storage is private to the e2e tests, every container in it is ours ----------
if [ -f "$E2E/podman.env" ]; then
  # shellcheck source=/dev/null
  . "$E2E/podman.env"
  podman rm -af -t 0 >/dev/null 2>&1
  rm -f "$E2E"/podman/net.d/*.conflist
  if [ $PURGE = 1 ]; then
    podman rmi -af >/dev/null 2>&1
    podman system reset -f >/dev/null 2>&1   # also unmounts $E2E/podman/root/overlay
  fi
fi

# ---- containerd: the one started by tests/e2e (its pid file), never another ---------------------
C=$E2E/containerd
if [ -f "$C/containerd.pid" ]; then
  pid=$(cat "$C/containerd.pid")
  if tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -qF "$C/config.toml"; then
    for id in $(ctr -a "$C/containerd.sock" -n k8s.io tasks ls -q 2>/dev/null); do
      ctr -a "$C/containerd.sock" -n k8s.io tasks kill -s SIGKILL "$id" >/dev/null 2>&1
    done
    sleep 0.5
    for id in $(ctr -a "$C/containerd.sock" -n k8s.io tasks ls -q 2>/dev/null); do
      ctr -a "$C/containerd.sock" -n k8s.io tasks delete -f "$id" >/dev/null 2>&1
    done
    for id in $(ctr -a "$C/containerd.sock" -n k8s.io containers ls -q 2>/dev/null); do
      ctr -a "$C/containerd.sock" -n k8s.io containers delete "$id" >/dev/null 2>&1
      rm -f /var/lib/cni/results/*-"$id"-*   # go-cni's cache (cni-loopback-<id>-lo, <net>-<id>-eth0)
    done
    kill "$pid" 2>/dev/null
    for _ in $(seq 50); do [ -d "/proc/$pid" ] || break; sleep 0.2; done
    [ -d "/proc/$pid" ] && kill -9 "$pid" 2>/dev/null
    log "stopped containerd $pid"
  fi
  rm -f "$C/containerd.pid"
fi
# whatever containerd left mounted under its dirs (netns bind mounts, sandbox shm), deepest first
awk -v c="$C/" 'index($2, c) == 1 {print $2}' /proc/mounts | sort -r | while read -r m; do
  umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null
done
rm -f "$C"/state/io.containerd.grpc.v1.cri/netns/* 2>/dev/null
rm -f "$C"/net.d/*
# runc state and shim sockets go to /run/containerd whatever the config says: remove empty dirs only
[ -d /run/containerd ] && find /run/containerd -depth -type d -empty -delete 2>/dev/null

# ---- an agent left by a killed test run: tests/e2e/conftest.py records its pid ----------------
if [ -f "$E2E/agent.pid" ]; then
  pid=$(cat "$E2E/agent.pid")
  if tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -qF "$E2E/agent/agent.toml"; then
    kill "$pid" 2>/dev/null
    for _ in $(seq 50); do [ -d "/proc/$pid" ] || break; sleep 0.2; done
    [ -d "/proc/$pid" ] && kill -9 "$pid" 2>/dev/null
    log "stopped agent $pid"
  fi
  rm -f "$E2E/agent.pid"
fi

# ---- kernel objects and caches with our prefix ------------------------------------------------
for ns in $(ip netns list | awk '{print $1}' | grep "^$PFX"); do ip netns delete "$ns"; done
for l in $(ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1 | grep "^$PFX"); do
  ip link delete dev "$l" 2>/dev/null
done
rm -f /var/lib/cni/results/"$PFX"*

# portmap's top-level chain stays after the last DEL; remove it when no container rule is left
if iptables -w -t nat -S CNI-HOSTPORT-DNAT >/dev/null 2>&1 &&
   [ "$(iptables -w -t nat -S CNI-HOSTPORT-DNAT | grep -c '^-A')" = 0 ]; then
  for parent in PREROUTING OUTPUT; do
    while iptables -w -t nat -D "$parent" -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT 2>/dev/null; do :; done
  done
  iptables -w -t nat -X CNI-HOSTPORT-DNAT 2>/dev/null
fi

if [ $PURGE = 1 ]; then
  rm -rf "$E2E"
  log "purged $E2E"
fi
exit 0
