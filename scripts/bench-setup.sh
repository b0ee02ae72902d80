#!/bin/bash
# What `make bench` needs beyond `make deps`: the Go reference plugins (Debian's
# containernetworking-plugins, in /usr/lib/cni), iperf3, iproute2, nsenter (util-linux) and GNU time
# (a plugin's own peak RSS: see bench/spawn.py).
# Idempotent: apt-get update and install run only when something is missing.
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "bench-setup: must run as root (it installs packages; the bench creates netns)" >&2; exit 1; }
# shellcheck source=lib/ensure_pkgs.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/ensure_pkgs.sh"
# iperf3's postinst asks whether to start a daemon: say no, never listen on the host
ensure_pkgs --no-recommends --preseed "iperf3 iperf3/start_daemon boolean false" \
  containernetworking-plugins iperf3 iproute2 util-linux time
for f in /usr/lib/cni/bridge /usr/lib/cni/host-local /usr/lib/cni/macvlan; do
  [ -x "$f" ] || { echo "bench-setup: $f missing after installing containernetworking-plugins" >&2; exit 1; }
done
for c in iperf3 nsenter ip /usr/bin/time; do
  command -v "$c" >/dev/null || { echo "bench-setup: $c missing" >&2; exit 1; }
done
