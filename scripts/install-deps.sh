#!/usr/bin/env bash
# Installs the Debian packages bulwark needs to build and test, if any are missing.
# Runs apt-get as root, or through sudo. Nothing else is downloaded.
set -euo pipefail

packages=(
  build-essential cmake pkg-config            # toolchain
  libuv1-dev node-llhttp libssl-dev           # event loop, HTTP/1.1 parser sources, TLS
  libyaml-cpp-dev prometheus-cpp-dev doctest-dev
  libre2-dev                                  # route regexes (linear time)
  clang libclang-rt-dev                       # the sanitizer and fuzz build: ASan, UBSan, libFuzzer
  curl                                        # used by the demo and by people
  prometheus                                  # promtool: the tests check /metrics and the alert rules
)
# The schema check of `bulwark inject`'s output (tests/kubernetes, run by npm and node). Only when
# the commands are missing: a machine with Node.js from another source has both already, and
# Debian's npm would conflict with it.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  packages+=(nodejs npm)
fi
# kubectl renders the injected manifests with kustomize in a test, which says it was skipped
# without it. Not every Debian mirror carries it, so only when apt knows the package.
if apt-cache show kubectl >/dev/null 2>&1; then
  packages+=(kubectl)
fi
# The transparent mode test writes the rules of `bulwark iptables` in a network namespace of
# its own (skipped, saying so, where that is not allowed).
packages+=(iptables iproute2)
# Extra tools when asked:
#   --bench   for the benchmarks (loadtest/)
#   --image   for the container image (scripts/build-image.sh, scripts/test-image.sh)
for option in "$@"; do
  case $option in
    --bench)
      packages+=(wrk nginx-light haproxy gnuplot-nox   # gnuplot draws the charts of loadtest/run
                 openssl) ;;                        # the command: its TLS scenarios' certificates
    --image)
      packages+=(podman                           # builds the image without a docker daemon
                 debootstrap) ;;                  # makes the debian:12 base where no registry answers
    *) echo "install-deps: unknown option '$option' (known: --bench, --image)" >&2; exit 2 ;;
  esac
done

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if ((${#missing[@]} == 0)); then
  exit 0
fi

echo "install-deps: installing ${missing[*]}" >&2
sudo=()
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || { echo "install-deps: need root or sudo to install ${missing[*]}" >&2; exit 1; }
  sudo=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
