#!/usr/bin/env bash
# tools/test.sh: builds with -Werror under ASan+UBSan and under TSan, runs the default
# suites (and the concurrency suite under TSan), runs each fuzz harness for a bounded time
# (tools/fuzz.sh, EXO_FUZZ_SECONDS, default 20), and prints "N passed, N failed" last.
# Opt-in suites: EXO_TEST_SUITES="soak fault" adds them.
set -uo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc 2>/dev/null || echo 2)
passed=0
failed=0

summarize() { # $1: meson test log, adds to the totals
  local ok fail to up
  ok=$(awk '/^Ok:/ {print $2}' "$1" | tail -1)
  fail=$(awk '/^Fail:/ {print $2}' "$1" | tail -1)
  to=$(awk '/^Timeout:/ {print $2}' "$1" | tail -1)
  up=$(awk '/^Unexpected Pass:/ {print $3}' "$1" | tail -1)
  passed=$((passed + ${ok:-0}))
  failed=$((failed + ${fail:-0} + ${to:-0} + ${up:-0}))
}

setup() { # $1 dir, rest: meson options
  local dir=$1; shift
  if [ -d "$dir" ]; then
    meson setup --reconfigure "$dir" "$@" >/dev/null || return 1
  else
    meson setup "$dir" "$@" >/dev/null || return 1
  fi
}

extra_suites=()
for s in ${EXO_TEST_SUITES:-}; do extra_suites+=(--suite "$s"); done

if setup build-asan -Dwerror=true -Db_sanitize=address,undefined -Db_lundef=false &&
   ninja -C build-asan -j "$jobs"; then
  meson test -C build-asan --print-errorlogs --num-processes "$jobs" \
    --suite unit --suite integration --suite concurrency --suite fault "${extra_suites[@]}" 2>&1 | tee build-asan/test-summary.log
  summarize build-asan/test-summary.log
else
  echo "ASan+UBSan build failed"; failed=$((failed + 1))
fi

if setup build-tsan -Dwerror=true -Db_sanitize=thread -Db_lundef=false &&
   ninja -C build-tsan -j "$jobs"; then
  meson test -C build-tsan --print-errorlogs --num-processes "$jobs" \
    --suite concurrency 2>&1 | tee build-tsan/test-summary.log
  summarize build-tsan/test-summary.log
else
  echo "TSan build failed"; failed=$((failed + 1))
fi

# libFuzzer harnesses (tests/fuzz), EXO_FUZZ_SECONDS each under ASan+UBSan; one test each.
mkdir -p build-fuzz
bash tools/fuzz.sh "${EXO_FUZZ_SECONDS:-20}" 2>&1 | tee build-fuzz/fuzz-summary.log
fz=$(awk '/^fuzz: [0-9]+ passed/ {print $2, $4}' build-fuzz/fuzz-summary.log | tail -1)
if [ -n "$fz" ]; then
  passed=$((passed + ${fz% *})); failed=$((failed + ${fz#* }))
else
  echo "fuzz: no result"; failed=$((failed + 1))
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
