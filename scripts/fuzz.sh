#!/usr/bin/env bash
# Builds the libFuzzer targets of tests/fuzz (clang, ASan + UBSan, in build-fuzz/) and runs each
# for SECONDS seconds (default 60), as many at a time as there are cores. Usage:
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]      e.g. scripts/fuzz.sh 600 fuzz_chunked
#   scripts/fuzz.sh 0                           only builds (to replay a finding)
#
# The seeds in tests/fuzz/corpus/<target>/ are read, never written: what a run finds that adds
# coverage goes to build-fuzz/corpus/<target>/, which later runs start from too (README
# "Fuzzing" says how to merge it into the seeds). A crash, leak, timeout or out-of-memory is
# saved in build-fuzz/findings/<target>/; the script then exits 1 and prints the reproducer's
# path and the command that replays it. Each target's output is in build-fuzz/fuzz-logs/.
# FUZZ_BUILD_DIR and FUZZ_JOBS override the tree and the number of targets run at once.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
shift || true
all_targets=(fuzz_request fuzz_response fuzz_chunked fuzz_router fuzz_config fuzz_inject)
targets=("$@")
((${#targets[@]} > 0)) || targets=("${all_targets[@]}")
build=${FUZZ_BUILD_DIR:-build-fuzz}
jobs=${FUZZ_JOBS:-$(nproc)}

# Inputs longer than this are cut: long enough for a pipelined exchange or the bare full.yaml,
# short enough to keep thousands of executions a second.
max_len() {
  case $1 in
    fuzz_request | fuzz_response | fuzz_chunked) echo 4096 ;;
    fuzz_router) echo 2048 ;;
    fuzz_config | fuzz_inject) echo 8192 ;;
  esac
}
dict() {
  case $1 in
    fuzz_request | fuzz_response | fuzz_chunked) echo tests/fuzz/http.dict ;;
    fuzz_router) echo tests/fuzz/router.dict ;;
    fuzz_config) echo tests/fuzz/config.dict ;;
    fuzz_inject) echo tests/fuzz/inject.dict ;;
  esac
}

CC=${CC:-clang} CXX=${CXX:-clang++} cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release \
  -DBULWARK_FUZZ=ON >/dev/null
cmake --build "$build" -j"$(nproc)" --target fuzz_targets >/dev/null
if ((seconds == 0)); then  # libFuzzer would read -max_total_time=0 as "no limit"
  echo "fuzz: built ${targets[*]} in $build/fuzz/" >&2
  exit 0
fi

# UBSan already aborts (-fno-sanitize-recover); make it say where.
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}
mkdir -p "$build/fuzz-logs"

run() {
  local t=$1
  local corpus=$build/corpus/$t findings=$build/findings/$t log=$build/fuzz-logs/$t.log
  mkdir -p "$corpus" "$findings"
  local rc=0
  # timeout: a safety net in case the fuzzer itself hangs; libFuzzer stops at max_total_time.
  timeout $((seconds + 300)) "$build/fuzz/$t" -max_total_time="$seconds" -max_len="$(max_len "$t")" \
    -timeout=10 -rss_limit_mb=2048 -dict="$(dict "$t")" -artifact_prefix="$findings/" \
    -print_final_stats=1 "$corpus" "tests/fuzz/corpus/$t" >"$log" 2>&1 || rc=$?
  echo "$rc" >"$build/fuzz-logs/$t.rc"
}

echo "fuzz: ${targets[*]}, ${seconds} s each, ${jobs} at a time" >&2
running=0
for t in "${targets[@]}"; do
  if ((running >= jobs)); then
    wait -n || true
    running=$((running - 1))
  fi
  run "$t" &
  running=$((running + 1))
done
wait

failed=0
for t in "${targets[@]}"; do
  log=$build/fuzz-logs/$t.log
  rc=$(cat "$build/fuzz-logs/$t.rc")
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1)
  if [[ $rc == 0 ]]; then
    echo "fuzz: $t ok: ${runs:-?} runs, ${cov:-cov: ?}, scratch corpus $(ls "$build/corpus/$t" | wc -l) inputs" >&2
    continue
  fi
  failed=1
  artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
  echo "fuzz: $t FAILED (exit $rc); log $log" >&2
  grep -E -m 8 'fuzz property failed|ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error|SUMMARY' "$log" >&2 || true
  # A property's detail (the input, escaped) too: a CI log is often all there is of a finding.
  sed -n '/fuzz property failed/,/^==[0-9]*==/p' "$log" | head -n 12 | cut -c1-4000 >&2 || true
  if [[ -n $artifact ]]; then
    echo "fuzz: reproducer $artifact" >&2
    echo "fuzz: replay with: $build/fuzz/$t -timeout=10 $artifact" >&2
  fi
done
if ((failed)); then
  echo "fuzz: FAILED" >&2
  exit 1
fi
echo "fuzz: no crash in ${#targets[@]} target(s)" >&2
