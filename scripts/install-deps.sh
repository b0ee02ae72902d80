#!/bin/bash
# System packages cloudnic's build, demo and tests need on Debian 12 (run as root).
# Idempotent and quick when everything is present already.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
pkgs=(gcc libc6-dev make iproute2 iputils-ping procps)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
  apt-get -o DPkg::Lock::Timeout=900 update -qq
  apt-get -o DPkg::Lock::Timeout=900 install -y -qq "${missing[@]}" >/dev/null
fi
