#!/usr/bin/env bash
# tools/fuzz.sh [SECONDS]: builds the libFuzzer harnesses of tests/fuzz with clang under
# ASan+UBSan (-Dfuzz=true, -Werror) into build-fuzz and runs each one for SECONDS
# (default 30), one after another. A crash, leak, UB report or timeout fails the harness;
# its input is kept under build-fuzz/fuzz-artifacts/NAME/ (copy it into
# tests/fuzz/corpus/NAME/ as a regression input once fixed). New coverage-increasing
# inputs go to build-fuzz/fuzz-corpus/NAME/, never into the committed corpus.
# Env: EXO_FUZZ_BUILD (build dir), EXO_FUZZ_ONLY="envelope config" (subset),
# EXO_FUZZ_JOBS (ninja -j, default 2). Last line: "fuzz: N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
secs=${1:-30}
dir=${EXO_FUZZ_BUILD:-build-fuzz}
passed=0
failed=0

names=()
for f in tests/fuzz/fuzz_*.c; do
  n=$(basename "$f" .c)
  names+=("${n#fuzz_}")
done
[ -n "${EXO_FUZZ_ONLY:-}" ] && read -r -a names <<<"$EXO_FUZZ_ONLY"

# -march=native -Wno-unknown-pragmas: tensor/'s ISA kernels use `#pragma GCC target`, which
# clang ignores (and warns about); the fuzz binaries only ever run on this machine.
opts=(-Dfuzz=true -Dwerror=true -Db_sanitize=address,undefined -Db_lundef=false
      "-Dc_args=-march=native -Wno-unknown-pragmas")
if [ -d "$dir/meson-private" ]; then # a configured tree (tools/test.sh makes $dir for its log)
  CC=clang meson setup --reconfigure "$dir" "${opts[@]}" >/dev/null
else
  CC=clang meson setup "$dir" "${opts[@]}" >/dev/null
fi || { echo "fuzz: meson setup failed"; echo "fuzz: 0 passed, 1 failed"; exit 1; }
# One target at a time: a harness that does not build fails alone (and never runs a
# stale binary); the others still run.
declare -A built
for n in "${names[@]}"; do
  if ninja -C "$dir" -j "${EXO_FUZZ_JOBS:-2}" "tests/fuzz/fuzz_$n" >"$dir/fuzz-build-$n.log" 2>&1; then
    built[$n]=1
  else
    echo "fuzz_$n: build failed (log $dir/fuzz-build-$n.log):"
    grep -E "error" "$dir/fuzz-build-$n.log" | head -3
  fi
done

for n in "${names[@]}"; do
  work="$dir/fuzz-corpus/$n"
  art="$dir/fuzz-artifacts/$n"
  log="$dir/fuzz-$n.log"
  if [ -z "${built[$n]:-}" ]; then
    failed=$((failed + 1))
    continue
  fi
  mkdir -p "$work" "$art"
  echo "== fuzz_$n: ${secs}s"
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:allocator_may_return_null=1 \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  EXO_FIXTURES="$PWD/tests/fixtures" OPENBLAS_NUM_THREADS=1 \
    "$dir/tests/fuzz/fuzz_$n" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
      -print_final_stats=1 -artifact_prefix="$art/" "$work" "tests/fuzz/corpus/$n" >"$log" 2>&1
  rc=$?
  # The last status line (execs, cov, ft, corpus) and the final stats, for the record.
  grep -E '^#[0-9]+' "$log" | tail -1
  grep -E '^stat::(number_of_executed_units|peak_rss_mb)' "$log"
  if [ "$rc" -eq 0 ]; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    echo "fuzz_$n FAILED (exit $rc); log $log; inputs:"
    ls "$art"
    grep -E 'ERROR|SUMMARY|property failed|runtime error' "$log" | head -5
  fi
done
echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
