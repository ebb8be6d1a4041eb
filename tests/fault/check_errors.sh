#!/bin/sh
# tests/fault/check_errors.sh HARNESS DIR: bad scenarios are refused with exit status 2 and
# an error at the offending file:line:column, before any node starts.
h=$1; d=$2; fails=0
expect() { # file, text the error must contain
  out=$("$h" "$d/$1" 2>&1); rc=$?
  if [ "$rc" -ne 2 ] || ! printf '%s' "$out" | grep -qF -- "$2"; then
    echo "FAIL $1: rc $rc, got: $out"; fails=$((fails + 1))
  else
    echo "ok $1: $out"
  fi
}
expect origin-killed.yaml "origin-killed.yaml:6:5: timeline: node 2 is the origin"
expect bad-spec.yaml "bad-spec.yaml:5:24: faults: item 1 (to=1,drop=1.5): drop must be a probability"
expect bad-node.yaml "bad-node.yaml:4:27: stop: expected an integer in 1..3, got '4'"
exit $fails
