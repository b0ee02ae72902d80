#!/bin/bash
# Remove exactly what scripts/install.sh installed (its manifest), nothing else.
set -euo pipefail
D=${DESTDIR:-}
MAN=$D/opt/cloudnic/manifest
[ -f "$MAN" ] || { echo "cloudnic is not installed (no $MAN)"; exit 0; }
MANLIST=$(mktemp); trap 'rm -f "$MANLIST"' EXIT
cp "$MAN" "$MANLIST"
if [ -z "$D" ] && command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
  systemctl disable --now cloudnic-agent.service 2>/dev/null || true
fi
rm -f "$MAN"
# files first, then the directories this install created, deepest first (only when empty)
while read -r kind path; do
  case $kind in
    file) rm -f "$D$path" ;;
    dir) rm -rf "${D:?}$path" ;;
  esac
done < <(grep -v '^mkdir ' "$MANLIST")
while read -r kind path; do rmdir "$D$path" 2>/dev/null || true; done < <(grep '^mkdir ' "$MANLIST" | tac)
if [ -z "$D" ] && command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
echo "uninstalled cloudnic"
