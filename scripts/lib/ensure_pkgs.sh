# shellcheck shell=bash
# ensure_pkgs: install the Debian packages that are missing, and nothing else. Source this file, then
#
#   ensure_pkgs [--no-recommends] [--preseed 'PKG QUESTION TYPE VALUE']... [--] PKG...
#
# * One `dpkg-query` for all of PKG...; when every one is installed that is all it does (no `apt-get update`,
#   no root needed): the scripts that use it are fast no-ops on a prepared machine.
# * Otherwise, as root: the --preseed answers go to debconf-set-selections, then ONE `apt-get update` and ONE
#   `apt-get install -y` of the missing ones (with --no-install-recommends if asked), with the options every
#   script of ours used: DPkg::Lock::Timeout=900 (wait for another apt, e.g. a parallel peer's setup) and
#   --force-unsafe-io (no fsync per unpacked file: much faster, a crash mid-install means reinstalling).
# * Quiet: one line naming what it installs; apt's output goes to a log whose tail is shown only on failure.
# * Packages do not start their services while being installed: a /usr/sbin/policy-rc.d answering 101 is put
#   in place for the install when none exists, and removed after it (nothing of ours wants a daemon on the
#   host's addresses: neutron-server on 0.0.0.0:9696, PostgreSQL, keystone, iperf3).
# * On failure it prints what failed and the exit code to stderr and returns non-zero (under `set -e` the
#   calling script stops there).
# * After it returns 0, the global array ENSURE_PKGS_INSTALLED lists what it installed (empty on a no-op), e.g.
#   to time only real installs.
# Messages start with $ENSURE_PKGS_TAG (default: the calling script's name).

ensure_pkgs() {
  local tag=${ENSURE_PKGS_TAG:-$(basename "${0%.sh}")} recommends=() preseed=() missing=() p status
  ENSURE_PKGS_INSTALLED=()
  while (($#)); do
    case $1 in
      --no-recommends) recommends=(--no-install-recommends); shift ;;
      --preseed) [ $# -ge 2 ] || { echo "$tag: ensure_pkgs: --preseed needs a value" >&2; return 2; }
                 preseed+=("$2"); shift 2 ;;
      --) shift; break ;;
      -*) echo "$tag: ensure_pkgs: unknown option $1" >&2; return 2 ;;
      *) break ;;
    esac
  done
  (($#)) || { echo "$tag: ensure_pkgs: no package named" >&2; return 2; }
  declare -A installed=()
  while read -r p status; do
    if [ "$status" = "install ok installed" ]; then installed[$p]=1; fi
  done < <(dpkg-query -W -f='${Package} ${Status}\n' "$@" 2>/dev/null || true)
  for p in "$@"; do [ -n "${installed[$p]:-}" ] || missing+=("$p"); done
  ((${#missing[@]})) || return 0

  if [ "$(id -u)" != 0 ]; then
    echo "$tag: missing packages ${missing[*]}; run this as root to install them" >&2
    return 1
  fi
  echo "$tag: installing ${missing[*]}" >&2
  local rc=0 log
  log=$(mktemp "${TMPDIR:-/tmp}/ensure_pkgs.XXXXXX")
  (   # `set -e` does not apply in a subshell tested with ||: every step says || exit
    export DEBIAN_FRONTEND=noninteractive
    apt=(apt-get -o DPkg::Lock::Timeout=900 -o DPkg::Options::=--force-unsafe-io -q)
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      trap 'rm -f /usr/sbin/policy-rc.d' EXIT
      printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d || exit
    fi
    for p in "${preseed[@]}"; do echo "$p" | debconf-set-selections || exit; done
    "${apt[@]}" update || exit
    "${apt[@]}" install -y "${recommends[@]}" "${missing[@]}" || exit
  ) >"$log" 2>&1 || rc=$?
  if [ "$rc" != 0 ]; then
    echo "$tag: installing ${missing[*]} failed (exit code $rc); the end of apt-get's output:" >&2
    tail -n 20 "$log" | sed 's/^/  /' >&2
    rm -f "$log"
    return "$rc"
  fi
  rm -f "$log"
  for p in "${missing[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' ||
      { echo "$tag: $p is still not installed after apt-get install; is that its exact name?" >&2; return 1; }
  done
  ENSURE_PKGS_INSTALLED=("${missing[@]}")
}
