#!/usr/bin/env bash
# tools/deps.sh: installs the Debian 12 packages exo-actors builds and tests with.
# Installs only what is missing; uses sudo when not root. Changes nothing else.
set -euo pipefail
pkgs=(build-essential meson ninja-build pkg-config clang libclang-rt-14-dev
      libevent-dev libnanomsg-dev liburcu-dev libopenblas-dev libyaml-dev
      libjansson-dev libpcre2-dev libsodium-dev curl iproute2
      chromium chromium-driver)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing: ${missing[*]}"
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
