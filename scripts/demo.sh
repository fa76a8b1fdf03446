#!/usr/bin/env bash
# Installs what is missing, builds bulwark, starts a small demo upstream on 127.0.0.1:9000 and
# runs bulwark in front of it on 127.0.0.1:8080 (admin on 127.0.0.1:9901) with
# config/examples/demo.yaml. Ctrl-C drains and stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" --target bulwark demo-upstream

./build/demo-upstream --port 9000 --name demo-upstream >/dev/null &
upstream=$!
trap 'kill "$upstream" 2>/dev/null || true' EXIT

./build/bulwark --config config/examples/demo.yaml &
proxy=$!
trap 'kill "$proxy" 2>/dev/null || true; kill "$upstream" 2>/dev/null || true' EXIT
for _ in $(seq 50); do
  curl -sf http://127.0.0.1:9901/ready >/dev/null 2>&1 && break
  sleep 0.1
done
cat >&2 <<'MSG'

bulwark is running. In another terminal, try:
  curl -i http://127.0.0.1:8080/hello              # proxied to the demo upstream
  curl -i -d 'some body' http://127.0.0.1:8080/echo
  curl http://127.0.0.1:9901/metrics               # Prometheus metrics
  curl http://127.0.0.1:9901/clusters              # endpoints and pools
Ctrl-C drains and stops.

MSG
echo "--- curl -i http://127.0.0.1:8080/hello" >&2
curl -si http://127.0.0.1:8080/hello >&2 || true
echo >&2
trap 'kill -TERM "$proxy" 2>/dev/null || true' INT TERM
wait "$proxy" || true
