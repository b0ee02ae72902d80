#!/bin/bash
# Prepare the real CNI callers used by tests/e2e: cnitool, podman (CNI backend), containerd (CRI).
# Debian 12, run as root. Idempotent and cached: a second run only checks and takes about a second.
#
# Everything lives under $CLOUDNIC_E2E_DIR (default /var/tmp/cloudnic-e2e):
#   bin/cnitool                built from Debian's *source* package (the -dev package leaves it out)
#   cni-bin/                   the CNI plugin dir: reference plugins (symlinks) + our shim as `cloudnic`
#   podman/                    podman's isolated config, storage, and network config dir (podman/net.d)
#   podman.env                 `source` it (or pass its variables) before every podman call
#   containerd/config.toml     containerd config (CRI with cni bin_dir=cni-bin, conf_dir=containerd/net.d)
#   images/pause.tar           the sandbox image as a docker archive, for `ctr images import`
#   env.json                   the paths above, read by tests/e2e/conftest.py
# Nothing here starts a daemon, creates a netns, a link, or touches sysctls; scripts/e2e-teardown.sh
# undoes it all.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
APT=(apt-get -o DPkg::Lock::Timeout=900 -qq)
E2E=${CLOUDNIC_E2E_DIR:-/var/tmp/cloudnic-e2e}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUSYBOX_IMAGE=localhost/cne-busybox:latest
PAUSE_IMAGE=localhost/cne-pause:latest
PACKAGES=(containernetworking-plugins golang-go golang-github-appc-cni-dev podman runc busybox-static
          jq iputils-ping containerd iproute2 iptables xz-utils)

log() { printf 'e2e-setup: %s\n' "$*" >&2; }
[ "$(id -u)" = 0 ] || { log "must run as root"; exit 1; }
mkdir -p "$E2E"/{bin,src,cni-bin,images,rootfs/bin,podman/tmp,podman/net.d,containerd/net.d}

# ---- packages: one `apt-get update`, and only when something is missing -------------------------
# shellcheck source=lib/ensure_pkgs.sh
. "$REPO/scripts/lib/ensure_pkgs.sh"
ensure_pkgs "${PACKAGES[@]}"

# ---- cnitool: in the source package golang-github-appc-cni only; build offline in GOPATH mode ----
if [ ! -x "$E2E/bin/cnitool" ]; then
  log "building cnitool from Debian's source package"
  # a private deb-src list and private apt lists: the system's apt configuration stays untouched
  mkdir -p "$E2E/src/lists/partial"
  rm -f "$E2E"/src/deb-src.*
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then   # deb822 (Debian 12 default)
    srclist=$E2E/src/deb-src.sources
    sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources > "$srclist"
  else                                                     # one-line format
    srclist=$E2E/src/deb-src.list
    sed -n 's/^deb \(.*\)/deb-src \1/p' /etc/apt/sources.list > "$srclist"
  fi
  aptsrc=(-o Dir::Etc::SourceList="$srclist" -o Dir::Etc::SourceParts=/dev/null
          -o Dir::State::Lists="$E2E/src/lists" -o APT::Sandbox::User=root)
  "${APT[@]}" "${aptsrc[@]}" update
  rm -rf "$E2E"/src/golang-github-appc-cni-*
  (cd "$E2E/src" && "${APT[@]}" "${aptsrc[@]}" source --download-only golang-github-appc-cni >/dev/null \
     && tar xJf golang-github-appc-cni_*.orig.tar.xz)
  (cd "$E2E"/src/golang-github-appc-cni-*/cnitool &&
     GO111MODULE=off GOPATH=/usr/share/gocode GOFLAGS= GOPROXY=off CGO_ENABLED=0 GOCACHE="$E2E/src/gocache" \
     go build -o "$E2E/bin/cnitool.new" . && mv "$E2E/bin/cnitool.new" "$E2E/bin/cnitool")
fi

# ---- the CNI plugin dir: reference plugins and our shim ------------------------------------------
for p in bridge host-local loopback portmap bandwidth tuning; do
  ln -sfn "/usr/lib/cni/$p" "$E2E/cni-bin/$p"
done
if [ -f "$REPO/shim/Makefile" ]; then
  make -s -C "$REPO/shim" >/dev/null || { log "make -C shim failed"; exit 1; }
fi
ln -sfn "$REPO/shim/build/cloudnic" "$E2E/cni-bin/cloudnic"   # dangling until the shim is built

# podman's own plugin dir (podman.conf names it). The agent socket is given in the conflist
# ("agentSocket"): podman runs DEL from `podman container cleanup`, which conmon starts with a
# scrubbed environment, so CLOUDNIC_AGENT_SOCKET would not reach that DEL.
mkdir -p "$E2E/podman/cni-bin"
for p in bridge host-local loopback portmap bandwidth tuning; do
  ln -sfn "/usr/lib/cni/$p" "$E2E/podman/cni-bin/$p"
done
ln -sfn "$REPO/shim/build/cloudnic" "$E2E/podman/cni-bin/cloudnic"

# ---- a root filesystem from busybox-static --------------------------------------------------------
if [ ! -f "$E2E/rootfs.tar" ]; then
  cp /bin/busybox "$E2E/rootfs/bin/busybox"
  for a in sh ip ping sleep cat true nc ifconfig hostname; do ln -sfn busybox "$E2E/rootfs/bin/$a"; done
  mkdir -p "$E2E"/rootfs/{etc,proc,sys,dev,tmp}
  tar -C "$E2E/rootfs" -cf "$E2E/rootfs.tar.new" . && mv "$E2E/rootfs.tar.new" "$E2E/rootfs.tar"
fi

# ---- podman with the CNI backend, isolated under $E2E/podman ---------------------------------------
cat > "$E2E/podman/containers.conf" <<TOML
[containers]
log_driver = "k8s-file"
default_ulimits = []          # no CAP_SYS_RESOURCE here: podman's default nofile=1048576 fails
[engine]
cgroup_manager = "cgroupfs"   # no systemd as PID 1
events_logger = "file"
events_logfile_path = "$E2E/podman/events.log"
runtime = "runc"              # crun 1.8.1 refuses this hybrid cgroup v1/v2 host
tmp_dir = "$E2E/podman/tmp"
[network]
network_backend = "cni"
cni_plugin_dirs = ["$E2E/podman/cni-bin"]
network_config_dir = "$E2E/podman/net.d"
TOML
cat > "$E2E/podman/storage.conf" <<TOML
[storage]
driver = "overlay"
graphroot = "$E2E/podman/root"
runroot = "$E2E/podman/run"
TOML
cat > "$E2E/podman.env" <<ENV
export CONTAINERS_CONF=$E2E/podman/containers.conf
export CONTAINERS_STORAGE_CONF=$E2E/podman/storage.conf
ENV
# shellcheck source=/dev/null
. "$E2E/podman.env"
if ! podman image exists "$BUSYBOX_IMAGE"; then
  log "importing $BUSYBOX_IMAGE"
  podman import -q --change 'CMD ["/bin/sh"]' "$E2E/rootfs.tar" "$BUSYBOX_IMAGE" >/dev/null
fi
if ! podman image exists "$PAUSE_IMAGE"; then
  log "importing $PAUSE_IMAGE"
  podman import -q --change 'ENTRYPOINT ["/bin/sleep","2147483647"]' "$E2E/rootfs.tar" "$PAUSE_IMAGE" >/dev/null
fi
if [ ! -f "$E2E/images/pause.tar" ]; then
  # one image per archive: a two-image archive imports both names onto one manifest
  podman save -q --format docker-archive -o "$E2E/images/pause.tar.new" "$PAUSE_IMAGE" >/dev/null
  mv "$E2E/images/pause.tar.new" "$E2E/images/pause.tar"
fi

# ---- containerd: Debian's default config with every path moved under $E2E/containerd --------------
C=$E2E/containerd
containerd config default | sed \
  -e "s|^root = .*|root = \"$C/root\"|" \
  -e "s|^state = .*|state = \"$C/state\"|" \
  -e "s|address = \"/run/containerd/containerd.sock\"|address = \"$C/containerd.sock\"|" \
  -e "s|path = \"/opt/containerd\"|path = \"$C/opt\"|" \
  -e "s|sandbox_image = .*|sandbox_image = \"$PAUSE_IMAGE\"|" \
  -e "s|restrict_oom_score_adj = false|restrict_oom_score_adj = true|" \
  -e "s|netns_mounts_under_state_dir = false|netns_mounts_under_state_dir = true|" \
  -e "s|bin_dir = \"/opt/cni/bin\"|bin_dir = \"$E2E/cni-bin\"|" \
  -e "s|conf_dir = \"/etc/cni/net.d\"|conf_dir = \"$C/net.d\"|" \
  -e "s|max_conf_num = .*|max_conf_num = 1|" \
  > "$C/config.toml.new"
for want in "restrict_oom_score_adj = true" "netns_mounts_under_state_dir = true" "$C/containerd.sock" \
            "$E2E/cni-bin" "$C/net.d" "$PAUSE_IMAGE"; do
  grep -qF "$want" "$C/config.toml.new" || { log "containerd config: could not set '$want'"; exit 1; }
done
mv "$C/config.toml.new" "$C/config.toml"

cat > "$E2E/env.json" <<JSON
{
  "dir": "$E2E",
  "repo": "$REPO",
  "cnitool": "$E2E/bin/cnitool",
  "cni_bin": "$E2E/cni-bin",
  "agent_dir": "$E2E/agent",
  "podman_conf": "$E2E/podman/containers.conf",
  "podman_storage_conf": "$E2E/podman/storage.conf",
  "podman_net_dir": "$E2E/podman/net.d",
  "busybox_image": "$BUSYBOX_IMAGE",
  "pause_image": "$PAUSE_IMAGE",
  "pause_tar": "$E2E/images/pause.tar",
  "containerd_config": "$C/config.toml",
  "containerd_socket": "$C/containerd.sock",
  "containerd_net_dir": "$C/net.d",
  "containerd_dir": "$C"
}
JSON
log "ready in $E2E"
