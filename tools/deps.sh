#!/usr/bin/env bash
# tools/deps.sh: installs the Debian 12 packages exo-actors builds and tests with.
# Installs only what is missing; uses sudo when not root. Changes nothing else.
set -euo pipefail
pkgs=(build-essential meson ninja-build pkg-config clang libclang-rt-14-dev
      libevent-dev libnanomsg-dev liburcu-dev libopenblas-dev libyaml-dev
      libjansson-dev libpcre2-dev libsodium-dev curl iproute2
      chromium chromium-driver nodejs)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Debian's nodejs needs its npm package; other nodejs builds (nodesource) ship npm inside
command -v npm >/dev/null || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
echo "installing: ${missing[*]}"
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# tests/api/js: the openai library and playwright-core (which drives /usr/bin/chromium;
# it downloads no browser), pinned by the committed package-lock.json
js="$(dirname "$0")/../tests/api/js"
if ! cmp -s "$js/package-lock.json" "$js/node_modules/.exo-installed-lock"; then
  (cd "$js" && npm ci --no-audit --no-fund --loglevel=error &&
   cp package-lock.json node_modules/.exo-installed-lock)
fi
