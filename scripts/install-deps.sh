#!/bin/bash
# System packages cloudnic's build, demo and tests need on Debian 12 (run as root).
# Idempotent and quick when everything is present already.
set -euo pipefail
# shellcheck source=lib/ensure_pkgs.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/ensure_pkgs.sh"
ensure_pkgs gcc libc6-dev make iproute2 iputils-ping procps
