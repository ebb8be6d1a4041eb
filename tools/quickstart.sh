#!/usr/bin/env bash
# tools/quickstart.sh: the README's main command. Installs missing Debian packages, builds
# a release binary in build-release/, and generates text with the embedded default model.
# Extra arguments go to `exo-actors generate` (e.g. --prompt "...").
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/deps.sh
if [ ! -d build-release ]; then
  meson setup build-release --buildtype=release >/dev/null
fi
ninja -C build-release >/dev/null
model=models/demo
[ -d "$model" ] || { echo "quickstart: $model is missing" >&2; exit 1; }
if [ $# -eq 0 ]; then
  set -- --prompt "The old man walked to the" --max-tokens 48
fi
exec build-release/actors/exo-actors generate --model "$model" "$@"
