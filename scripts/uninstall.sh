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
while read -r kind a b; do
  case $kind in
    file) rm -f "$D$a" ;;
    dir) rm -rf "${D:?}$a" ;;
    conf)   # a config file: removed only while unmodified, like a package's conffiles
      if [ -f "$D$b" ] && [ "$(sha256sum < "$D$b" | cut -d' ' -f1)" = "$a" ]; then rm -f "$D$b"
      elif [ -e "$D$b" ]; then echo "kept $b: it was modified after install"; fi ;;
  esac
done < <(grep -v '^mkdir ' "$MANLIST")
while read -r kind path; do rmdir "$D$path" 2>/dev/null || true; done < <(grep '^mkdir ' "$MANLIST" | tac)
if [ -z "$D" ] && command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
echo "uninstalled cloudnic"
