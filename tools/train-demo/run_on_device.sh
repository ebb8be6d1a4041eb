#!/bin/bash
# One command that reproduces the demo model on the GPU machine: trains with train.py from
# the corpus that make_corpus.sh built (carried in CORPUS_DIR), then packs the model folder
# into OUT as a tar split in 15 MB parts (the device tool returns files of <= 16 MiB).
# Must not fetch anything; all settings live in train.py's defaults or the extra arguments.
#
# usage (on the device): bash tools/train-demo/run_on_device.sh CORPUS_DIR OUT [train.py args]
# unpack (here):         cat OUT/demo.tar.part-* | tar -x -C models/   (gives models/demo/)
set -euo pipefail
CORPUS_DIR=$1
OUT=$2
shift 2
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=$(mktemp -d)
export PYTHONUNBUFFERED=1 PYTHONHASHSEED=0 TOKENIZERS_PARALLELISM=true
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
python3 "$HERE/train.py" --corpus "$CORPUS_DIR/corpus.txt.xz" --sources "$CORPUS_DIR/corpus.sources.tsv" \
    --out "$WORK/demo" "$@" 2>&1 | tee "$OUT/train_stdout.txt"
cp "$WORK/demo/train_log.txt" "$OUT/"
rm "$WORK/demo/train_log.txt"
(cd "$WORK/demo" && sha256sum ./* >"$OUT/demo.sha256")
tar -C "$WORK" -cf - demo | split -b 15000000 -d - "$OUT/demo.tar.part-"
ls -l "$OUT"
