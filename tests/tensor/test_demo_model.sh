#!/bin/bash
# Checks the embedded demo model (models/demo/) end to end: `exo-actors generate`, greedy,
# on one node and split over 3 node processes, must reproduce exactly the greedy ids that
# transformers computed at training time (models/demo/reference.json). Owns no code of its
# own; must not rewrite the reference. Needs only bash, grep, tr and sed (no jq/python).
set -euo pipefail
SRC=${EXO_SOURCE_ROOT:?EXO_SOURCE_ROOT not set (run through meson test)}
BIN=${EXO_BUILD_ROOT:?EXO_BUILD_ROOT not set}/actors/exo-actors
MODEL=$SRC/models/demo
REF=$MODEL/reference.json
[ -x "$BIN" ] || { echo "FAIL: $BIN not built"; exit 1; }
[ -f "$REF" ] || { echo "FAIL: $REF missing"; exit 1; }

# reference.json without whitespace; each prompt object holds "prompt_ids" then "greedy_ids".
flat=$(tr -d ' \n\t' <"$REF")
mapfile -t prompts < <(grep -o '"prompt_ids":\[[0-9,]*\]' <<<"$flat" | sed 's/.*\[\(.*\)\]/\1/')
mapfile -t wants < <(grep -o '"greedy_ids":\[[0-9,]*\]' <<<"$flat" | sed 's/.*\[\(.*\)\]/\1/' | tr ',' ' ')
max_new=$(grep -o '"max_new_tokens":[0-9]*' <<<"$flat" | head -1 | cut -d: -f2)
n=${#prompts[@]}
if [ "$n" -lt 3 ] || [ "$n" -ne "${#wants[@]}" ] || [ -z "$max_new" ]; then
    echo "FAIL: $REF: expected >= 3 prompts with prompt_ids/greedy_ids and max_new_tokens, got $n/${#wants[@]}"
    exit 1
fi

fails=0
for ((i = 0; i < n; i++)); do
    for nodes in 1 3; do
        extra=()
        [ "$nodes" -gt 1 ] && extra=(--nodes "$nodes")
        if ! got=$("$BIN" generate --model "$MODEL" --prompt-ids "${prompts[$i]}" --ids \
                --temperature 0 --max-tokens "$max_new" "${extra[@]}" 2>"${TMPDIR:-/tmp}/demo_model_err.$$"); then
            echo "FAIL: prompt $i, $nodes node(s): exo-actors generate exited non-zero:"
            cat "${TMPDIR:-/tmp}/demo_model_err.$$"
            fails=$((fails + 1))
            continue
        fi
        got=$(echo $got)   # normalise whitespace
        if [ "$got" = "${wants[$i]}" ]; then
            echo "ok: prompt $i, $nodes node(s): $(wc -w <<<"$got") ids match transformers"
        else
            echo "FAIL: prompt $i, $nodes node(s)"
            echo "  want: ${wants[$i]}"
            echo "  got:  $got"
            fails=$((fails + 1))
        fi
    done
done
rm -f "${TMPDIR:-/tmp}/demo_model_err.$$"
[ "$fails" -eq 0 ] || { echo "$fails of $((2 * n)) runs differ"; exit 1; }
echo "all $((2 * n)) runs match"
