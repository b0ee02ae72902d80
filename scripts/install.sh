#!/bin/bash
# Put a host in service: the shim in the CNI bin dir, the agent in its own virtualenv,
# a systemd unit, a sample agent config and conflist. Every path written is recorded in
# a manifest so that scripts/uninstall.sh removes exactly that. DESTDIR stages the tree.
set -euo pipefail
cd "$(dirname "$0")/.."
D=${DESTDIR:-}
CNI_BIN_DIR=${CNI_BIN_DIR:-/opt/cni/bin}
PY=${PY:-python3}
MAN=$D/opt/cloudnic/manifest
[ -x shim/build/cloudnic ] || make -C shim
[ -d "$D/opt/cloudnic" ] && [ ! -f "$MAN" ] && { echo "$D/opt/cloudnic exists but was not installed by this script"; exit 1; }
[ -f "$MAN" ] && DESTDIR="$D" scripts/uninstall.sh >/dev/null   # reinstall: start from nothing
MANTMP=$(mktemp); trap 'rm -f "$MANTMP"' EXIT
: > "$MANTMP"
mkdirs() {  # create a directory and record each level this install created
  local rel=$1 parts=() p
  while [ -n "$rel" ] && [ "$rel" != / ] && [ ! -d "$D$rel" ]; do parts=("$rel" "${parts[@]}"); rel=$(dirname "$rel"); done
  for p in "${parts[@]}"; do mkdir "$D$p"; echo "mkdir $p" >> "$MANTMP"; done
}
put() {  # put SRC DEST MODE [keep]: install a file; "keep" leaves an existing (edited) file alone
  local src=$1 dst=$D$2 mode=$3 keep=${4:-}
  mkdirs "$(dirname "$2")"
  if [ -n "$keep" ] && [ -e "$dst" ]; then echo "kept existing $2"; return; fi
  install -m "$mode" "$src" "$dst"
  if [ -n "$keep" ]; then   # a config file: uninstall removes it only while it is unmodified
    echo "conf $(sha256sum < "$dst" | cut -d' ' -f1) $2" >> "$MANTMP"
  else
    echo "file $2" >> "$MANTMP"
  fi
}
mkdirs /opt/cloudnic
put shim/build/cloudnic "$CNI_BIN_DIR/cloudnic" 0755
put packaging/cloudnic-agent.service /etc/systemd/system/cloudnic-agent.service 0644
put packaging/agent.toml /etc/cloudnic/agent.toml 0600 keep
put packaging/10-cloudnic.conflist /etc/cni/net.d/10-cloudnic.conflist 0644 keep
put README.md /opt/cloudnic/README.md 0644
"$PY" -m venv "$D/opt/cloudnic/venv"
"$D/opt/cloudnic/venv/bin/pip" install -q .
echo "dir /opt/cloudnic/venv" >> "$MANTMP"
mkdirs /usr/local/sbin
ln -sf /opt/cloudnic/venv/bin/cloudnic "$D/usr/local/sbin/cloudnic"
echo "file /usr/local/sbin/cloudnic" >> "$MANTMP"
# a venv records absolute paths: when staged under DESTDIR, the scripts name the final location
if [ -n "$D" ]; then
  sed -i "s#$D/opt/cloudnic/venv#/opt/cloudnic/venv#g" "$D"/opt/cloudnic/venv/bin/* 2>/dev/null || true
fi
install -m 0644 "$MANTMP" "$MAN"
if [ -z "$D" ] && command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
  systemctl daemon-reload && systemctl enable --now cloudnic-agent.service
fi
echo "installed cloudnic (manifest: /opt/cloudnic/manifest)"
