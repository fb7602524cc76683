#!/usr/bin/env bash
# Runs every fuzz target for a short time each (default 10s): go test accepts
# one -fuzz target per package run, so targets are found and run one by one.
set -euo pipefail
base_fuzztime=${1:-10s}
cd "$(dirname "$0")/.."
status=0
while IFS= read -r file; do
  pkg=./$(dirname "$file")
  for target in $(grep -oE '^func (Fuzz[A-Za-z0-9_]+)' "$file" | awk '{print $2}'); do
    fuzztime=$base_fuzztime
    echo "== $pkg $target ($fuzztime)"
    # On a loaded machine the fuzzer can run out of time while still
    # replaying its corpus and then reports "context deadline exceeded"
    # without any failing input; that run proved nothing either way, so it
    # is retried once with twice the time. A real finding is never retried.
    for attempt in 1 2; do
      out=$(mktemp)
      if go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" "$pkg" 2>&1 | tee "$out"; then
        rm -f "$out"; break
      fi
      if [ "$attempt" = 1 ] && grep -q 'context deadline exceeded' "$out" && ! grep -q 'Failing input written' "$out"; then
        echo "== $target ran out of time before fuzzing; retrying"
        [[ $fuzztime =~ ^[0-9]+s$ ]] && fuzztime=$(( ${fuzztime%s} * 2 ))s
        rm -f "$out"; continue
      fi
      rm -f "$out"; status=1; break
    done
  done
done < <(grep -rl --include='*_test.go' -E '^func Fuzz' . | sort)
exit $status
