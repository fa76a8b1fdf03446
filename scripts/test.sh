#!/usr/bin/env bash
# Installs what is missing, then builds bulwark twice, runs every test, and fuzzes briefly:
#
#   1. build/       the release binary (gcc -O2) that users run and the benchmarks measure, its
#                   upstream and load tools, and the integration tests, run against them;
#   2. build-fuzz/  a clang build with AddressSanitizer and UndefinedBehaviorSanitizer of the
#                   same binaries, the unit tests and the libFuzzer targets of tests/fuzz. The
#                   unit tests run here, where the sanitizers see the libraries in-process; the
#                   integration tests of build/ run a second time, against this tree's bulwark
#                   and tools (BULWARK_TEST_BUILD_DIR), so the proxy itself runs sanitized;
#   3. every fuzz target for 15 s, two at a time (scripts/fuzz.sh), failing on a crash.
#
# So each test is compiled once (the test files were half of each build) and every test runs
# against sanitized code, the integration tests against the release binary too.
#
# Before the tests, `npm ci` installs the pinned Kubernetes schema checker of tests/kubernetes
# from the npm registry (the tests of `bulwark inject` run it with node).
#
# Every step runs even when an earlier test step failed, so one run reports everything; the
# last line says what failed, and the exit status is non-zero if anything did.
#
# Time, measured from a clean clone on 2 cores (README "Tests and sanitizers" has the table):
# the two builds are most of it. That is why the sanitizer tree compiles the tests at -O0 and
# only the code under test at -O1 (CMakeLists.txt): at -O2 it alone took longer than the
# release build.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
root=$PWD
jobs=$(nproc)
start=$SECONDS
failed=()
step() { echo "=== test.sh: $1 (at $((SECONDS - start)) s)" >&2; }

step "release build"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DBULWARK_UNIT_TESTS=OFF >/dev/null
cmake --build build -j"$jobs"

step "npm ci: the Kubernetes schema checker (tests/kubernetes)"
# The pinned versions of package-lock.json, for tests/integration/inject_test.cpp, which fails
# (never passes silently) when they are missing.
npm ci --prefix tests/kubernetes --no-audit --no-fund --loglevel=error >/dev/null ||
  failed+=("npm ci in tests/kubernetes")

step "integration tests, release build"
(cd build && ctest --output-on-failure -j"$jobs" --timeout 300) || failed+=("release tests")

step "sanitizer build (clang, ASan + UBSan)"
CC=clang CXX=clang++ cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=Release -DBULWARK_FUZZ=ON \
  -DBULWARK_UNIT_TESTS=ON -DBULWARK_INTEGRATION_TESTS=OFF >/dev/null
cmake --build build-fuzz -j"$jobs"

step "unit tests, then the integration tests again, under ASan + UBSan"
# Every process the tests start writes its sanitizer reports to a file here, so a report from a
# child (bulwark, an upstream) is seen even when the test that started it passed, e.g. a leak
# found as the proxy exits. tests/sanitizers/lsan.supp says why each suppression is there.
reports=$root/build-fuzz/sanitizer-reports
rm -rf "$reports"
mkdir -p "$reports"
asan_ctest=0
(
  export ASAN_OPTIONS="log_path=$reports/report:detect_leaks=1:check_initialization_order=1"
  export UBSAN_OPTIONS="log_path=$reports/report:print_stacktrace=1"
  export LSAN_OPTIONS="suppressions=$root/tests/sanitizers/lsan.supp:print_suppressions=0"
  rc=0
  (cd build-fuzz && ctest --output-on-failure -j"$jobs" --timeout 300) || rc=1
  (cd build && BULWARK_TEST_BUILD_DIR=$root/build-fuzz \
    ctest --output-on-failure -j"$jobs" --timeout 300 -R '^integration/') || rc=1
  exit $rc
) || asan_ctest=$?
mapfile -t found < <(find "$reports" -type f | sort)
for f in "${found[@]}"; do
  echo "--- sanitizer report $f" >&2
  head -n 60 "$f" >&2
done
if ((asan_ctest != 0 || ${#found[@]} > 0)); then
  failed+=("ASan+UBSan tests")
  echo "=== ASan + UBSan: FAILED: ctest exit $asan_ctest, ${#found[@]} sanitizer report(s) in $reports" >&2
else
  echo "=== ASan + UBSan: every unit and integration test passed, no sanitizer report" >&2
fi

step "fuzzing, 15 s per target"
scripts/fuzz.sh 15 || failed+=("fuzzing")

if ((${#failed[@]} > 0)); then
  echo "=== test.sh: FAILED: ${failed[*]} ($((SECONDS - start)) s)" >&2
  exit 1
fi
echo "=== test.sh: passed: integration tests, unit and integration tests under ASan + UBSan, fuzz targets ($((SECONDS - start)) s)" >&2
