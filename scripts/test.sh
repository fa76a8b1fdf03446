#!/usr/bin/env bash
# Installs what is missing, builds bulwark (release) and runs every test (unit and integration)
# under ctest, which prints one summary.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)"
cd build
ctest --output-on-failure -j"$(nproc)" --timeout 300
