#!/bin/bash
# What `make bench` needs beyond `make deps`: the Go reference plugins (Debian's
# containernetworking-plugins, in /usr/lib/cni), iperf3, iproute2, nsenter (util-linux) and GNU time
# (a plugin's own peak RSS: see bench/spawn.py).
# Idempotent: apt-get update and install run only when something is missing.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
[ "$(id -u)" = 0 ] || { echo "bench-setup: must run as root (it installs packages; the bench creates netns)" >&2; exit 1; }
pkgs=(containernetworking-plugins iperf3 iproute2 util-linux time)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "bench-setup: installing ${missing[*]}" >&2
  # iperf3's postinst asks whether to start a daemon: say no, never listen on the host
  echo "iperf3 iperf3/start_daemon boolean false" | debconf-set-selections
  apt-get -o DPkg::Lock::Timeout=900 update -qq
  apt-get -o DPkg::Lock::Timeout=900 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
for f in /usr/lib/cni/bridge /usr/lib/cni/host-local /usr/lib/cni/macvlan; do
  [ -x "$f" ] || { echo "bench-setup: $f missing after installing containernetworking-plugins" >&2; exit 1; }
done
for c in iperf3 nsenter ip /usr/bin/time; do
  command -v "$c" >/dev/null || { echo "bench-setup: $c missing" >&2; exit 1; }
done
