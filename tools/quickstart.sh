#!/usr/bin/env bash
# tools/quickstart.sh: the README's main command. Installs missing Debian packages, builds
# a release binary in build-release/, and generates text with the embedded default model
# (models/demo) split across three local node processes, with per-step timing.
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
  set -- --prompt "The secret of a happy life is" --max-tokens 48 --nodes 3 --stats \
    --temperature 0.7 --top-p 0.9 --repetition-penalty 1.3 --seed 7
fi
exec build-release/actors/exo-actors generate --model "$model" "$@"
