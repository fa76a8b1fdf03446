#!/usr/bin/env bash
# Builds the container image (scripts/build-image.sh) and runs it the way a container runtime
# would, without one: `podman run` needs cgroups, which these machines lack. So this script
#
#   1. unpacks the image's layers (`podman save` / `docker save`) into a directory: its root;
#   2. checks that root holds only what the Dockerfile promises (the binary, shared libraries,
#      the CA bundle, passwd/group with uid 65532, /tmp 1777, the config) and no shell, and that
#      the image is under 40 MB;
#   3. in new network, mount and PID namespaces (a loopback of its own, so the image's fixed
#      ports cannot clash with anything on this machine), mounts /proc and /dev in that root,
#      starts a stand-in application on 127.0.0.1:8081, and runs the image's entrypoint and
#      command in the root with chroot, as the image's user (65532) with the image's
#      environment;
#   4. asks GET /healthz and /ready on the probes port, sends a request through the inbound
#      listener to the application, checks which address each listener is bound to, and stops
#      bulwark with SIGTERM.
#
#   scripts/test-image.sh [--engine docker|podman]
#
# Slow (the first build bootstraps Debian and compiles bulwark: minutes), so scripts/test.sh
# does not run it; tests/integration/container_image_test.cpp is the quick check in the suite.
# Exit status: 0 passed, 1 failed, 77 skipped (something it needs is missing; the message says
# what).
set -euo pipefail
cd "$(dirname "$0")/.."

skip() { echo "test-image: SKIPPED: $*" >&2; exit 77; }
fail() { echo "test-image: FAILED: $*" >&2; exit 1; }
say() { echo "test-image: $*" >&2; }

# The ports of config/examples/container.yaml, the image's default config.
inbound_port=8080 probes_port=9902 admin_port=9901 app_port=8081
max_size=40000000  # bytes: 40 MB, uncompressed, as the engine reports it

# ---------------------------------------------------------------------------------------------
# Step 3 and 4 run here, as PID 1 of the new namespaces: `$0 --inside WORK`.
if [[ ${1:-} == --inside ]]; then
  work=$2
  root=$work/root
  ip link set lo up
  mkdir -p "$root/proc" "$root/dev"
  mount -t proc proc "$root/proc"
  mount --rbind /dev "$root/dev"

  mkdir -p "$work/app"
  echo "hello from the app" >"$work/app/hello"
  python3 -m http.server --bind 127.0.0.1 --directory "$work/app" "$app_port" \
    >"$work/app.log" 2>&1 &

  mapfile -t env <"$work/image.env"
  mapfile -t command <"$work/image.command"
  user=$(<"$work/image.user")
  chroot=$(command -v chroot)  # found here, before env -i leaves only the image's PATH
  in_image() { env -i "${env[@]}" "$chroot" --userspec="$user" "$root" "$@"; }

  # The CA bundle is where the image's environment says: a cluster with `tls: {}` (the system
  # trust store) passes --check, which loads CA files as the proxy does.
  printf '%s\n' 'listeners: [{name: l, address: 127.0.0.1:0, routes: [{name: all, cluster: c}]}]' \
    'clusters: [{name: c, endpoints: [example.com:443], tls: {}}]' >"$root/tmp/tls.yaml"
  in_image "${command[0]}" --config /tmp/tls.yaml --check >&2 ||
    fail "a cluster with tls: {} fails --check in the image: the system trust store is missing"

  say "running, in $root as $user: ${command[*]}"
  # A simple command, not in_image: started in the background it is exec'd, so $! is
  # bulwark's PID (env and chroot exec too).
  env -i "${env[@]}" "$chroot" --userspec="$user" "$root" "${command[@]}" \
    >"$work/bulwark.stdout" 2>"$work/bulwark.stderr" &
  bulwark=$!

  logs() { echo "--- bulwark's stderr:" >&2; cat "$work/bulwark.stderr" >&2; }
  get() { curl -s -m 2 -o "$work/body" -w '%{http_code}' "$1" || true; }

  for ((i = 0; i < 100; i++)); do
    [[ $(get "http://127.0.0.1:$probes_port/healthz") == 200 ]] && break
    kill -0 "$bulwark" 2>/dev/null || { logs; fail "bulwark exited before /healthz answered"; }
    sleep 0.1
  done
  status=$(get "http://127.0.0.1:$probes_port/healthz")
  say "GET /healthz on the probes port: $status $(<"$work/body")"
  [[ $status == 200 ]] || { logs; fail "/healthz answered $status, not 200, within 10 s"; }

  # /ready waits for the application: the config's TCP health check every 2 s.
  for ((i = 0; i < 100; i++)); do
    [[ $(get "http://127.0.0.1:$probes_port/ready") == 200 ]] && break
    sleep 0.1
  done
  status=$(get "http://127.0.0.1:$probes_port/ready")
  say "GET /ready on the probes port: $status $(<"$work/body")"
  [[ $status == 200 ]] || { logs; fail "/ready answered $status, not 200, within 10 s"; }

  status=$(get "http://127.0.0.1:$inbound_port/hello")
  say "GET /hello through the inbound listener: $status $(<"$work/body")"
  [[ $status == 200 && $(<"$work/body") == "hello from the app" ]] ||
    { logs; fail "the request through bulwark did not reach the application"; }
  # The access log is written every 50 ms, off the worker loops.
  for ((i = 0; i < 20; i++)); do
    grep -q '"path":"/hello"' "$work/bulwark.stdout" && break
    sleep 0.1
  done
  grep -q '"path":"/hello"' "$work/bulwark.stdout" ||
    { logs; fail "no access log line for /hello on bulwark's standard output within 2 s"; }

  # The probes listener serves the three probe paths only; the admin listener everything.
  status=$(get "http://127.0.0.1:$probes_port/config")
  [[ $status == 404 ]] || { logs; fail "GET /config on the probes port answered $status, not 404"; }
  status=$(get "http://127.0.0.1:$admin_port/config")
  [[ $status == 200 ]] || { logs; fail "GET /config on the admin port answered $status, not 200"; }

  # Where each listener is bound, as bulwark says: public ones on 0.0.0.0, admin on loopback.
  for expected in "inbound 0.0.0.0:$inbound_port" "probes 0.0.0.0:$probes_port" \
    "admin 127.0.0.1:$admin_port"; do
    read -r name address <<<"$expected"
    grep '"msg":"listening"' "$work/bulwark.stderr" | grep "\"listener\":\"$name\"" |
      grep -q "\"address\":\"$address\"" ||
      { logs; fail "bulwark did not log listener $name listening on $address"; }
  done

  # The process runs as the image's user, with no capabilities. (env and chroot exec: $bulwark
  # is bulwark's PID, in this PID namespace, so it is looked up in the /proc mounted for it.)
  uid_line=$(grep '^Uid:' "$root/proc/$bulwark/status" | tr -s '\t ' ' ')
  cap_line=$(grep '^CapEff:' "$root/proc/$bulwark/status" | tr -s '\t ' ' ')
  say "bulwark's $uid_line, $cap_line"
  [[ $uid_line == "Uid: 65532 65532 65532 65532" ]] || fail "bulwark does not run as uid 65532"
  [[ $cap_line == "CapEff: 0000000000000000" ]] || fail "bulwark has capabilities: $cap_line"

  # Transparent mode's init container runs this image's `bulwark iptables` as root (with
  # NET_ADMIN): the iptables binaries in the image write the rules, here in this namespace.
  env -i "${env[@]}" "$chroot" "$root" /usr/local/bin/bulwark iptables --inbound-ports 8080 \
    --outbound 80 >"$work/iptables.out" 2>&1 ||
    { cat "$work/iptables.out" >&2; fail "the image's bulwark iptables failed"; }
  env -i "${env[@]}" "$chroot" "$root" iptables-save -t nat >"$work/iptables.saved" 2>&1 ||
    { cat "$work/iptables.saved" >&2; fail "the image's iptables-save failed"; }
  grep -q -- '-A BULWARK_OUTPUT -m owner --uid-owner 65532 -j RETURN' "$work/iptables.saved" ||
    { cat "$work/iptables.saved" >&2; fail "bulwark iptables did not write its rules"; }
  say "bulwark iptables in the image wrote the rules of transparent mode"

  kill -TERM "$bulwark"
  for ((i = 0; i < 150; i++)); do kill -0 "$bulwark" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$bulwark" 2>/dev/null && fail "bulwark still runs 15 s after SIGTERM"
  wait "$bulwark" && code=0 || code=$?
  [[ $code == 0 ]] || { logs; fail "bulwark exited $code after SIGTERM, not 0"; }
  exit 0
fi

# ---------------------------------------------------------------------------------------------
# Steps 1 and 2, and what they need.
[[ $(id -u) -eq 0 ]] || skip "needs root: for chroot, unshare and mounting /proc (running as uid $(id -u))"
engine=""
case ${1:-} in
  --engine) engine=${2:?--engine needs docker or podman} ;;
  "") ;;
  *) fail "unknown argument '$1' (usage: scripts/test-image.sh [--engine docker|podman])" ;;
esac
# shellcheck source=scripts/lib/engine.sh
. scripts/lib/engine.sh  # the scripts run from the repository root
[[ -n $engine ]] || engine=$(find_container_engine)
[[ -n $engine ]] ||
  skip "no container engine: neither a docker daemon that answers 'docker info' nor podman" \
    "(scripts/install-deps.sh --image installs podman)"
command -v "$engine" >/dev/null || skip "$engine is not installed"
"$engine" info >/dev/null 2>&1 || skip "'$engine info' fails: $engine cannot build here"
for tool in unshare chroot mount ip curl python3 tar; do
  command -v "$tool" >/dev/null || skip "$tool is missing"
done
if ! "$engine" image inspect debian:12 >/dev/null 2>&1 && ! command -v debootstrap >/dev/null &&
  ! "$engine" pull docker.io/library/debian:12 >/dev/null 2>&1; then
  skip "$engine has no debian:12 image, cannot pull one, and debootstrap is missing to make it" \
    "(scripts/install-deps.sh --image installs it)"
fi
unshare --net --mount --pid --fork true 2>/dev/null ||
  skip "unshare cannot make network, mount and PID namespaces here"

version=$(sed -n 's/^project(bulwark VERSION \([0-9.]*\).*/\1/p' CMakeLists.txt)
tag="bulwark:$version"
start=$SECONDS
scripts/build-image.sh --engine "$engine" --tag "$tag"
build_seconds=$((SECONDS - start))

work=$(mktemp -d /var/tmp/bulwark-test-image.XXXXXX)
trap 'rm -rf "$work"' EXIT
root=$work/root
mkdir -p "$root" "$work/saved"

# Step 1: the image's layers, unpacked in order; `save` writes the image as it is, with
# nothing a container runtime would add.
"$engine" save -o "$work/image.tar" "$tag" >/dev/null
tar -C "$work/saved" -xf "$work/image.tar"
python3 - "$work/saved" >"$work/layers" <<'EOF'
import json, sys
manifest = json.load(open(sys.argv[1] + "/manifest.json"))
print("\n".join(manifest[0]["Layers"]))
EOF
while read -r layer; do
  tar -C "$root" -xpf "$work/saved/$layer"
done <"$work/layers"
if find "$root" -name '.wh.*' | grep -q .; then fail "a layer deletes files (whiteouts); not expected FROM scratch"; fi

# The image's user, entrypoint + command and environment, as a runtime would use them.
"$engine" image inspect "$tag" | python3 -c '
import json, sys
config = json.load(sys.stdin)[0]["Config"]
work = sys.argv[1]
open(work + "/image.user", "w").write(config.get("User") or "0:0")
open(work + "/image.command", "w").write(
    "\n".join((config.get("Entrypoint") or []) + (config.get("Cmd") or [])) + "\n")
open(work + "/image.env", "w").write("\n".join(config.get("Env") or []) + "\n")
' "$work"
[[ $(<"$work/image.user") == 65532:65532 ]] || fail "the image's user is '$(<"$work/image.user")', not 65532:65532"

# Step 2: what the root holds. Every file is one of these, and /tmp is there for anyone.
allowed='usr/local/bin/bulwark|etc/bulwark/bulwark\.yaml|etc/ssl/certs/ca-certificates\.crt'
allowed+='|etc/(passwd|group|nsswitch\.conf)'
allowed+='|(usr/)?lib(64)?/([a-z0-9_-]+/)?(ld-linux[a-z0-9_.-]*|lib[a-zA-Z0-9_+.-]+\.so[0-9.]*)'
# iptables for `bulwark iptables` (transparent mode's init container): the nft and legacy
# binaries, the names they answer to, and their extensions.
allowed+='|usr/sbin/(xtables-(nft|legacy)-multi|ip6?tables(-legacy)?-(restore|save))'
allowed+='|usr/lib/[a-z0-9_-]+/xtables/lib[a-zA-Z0-9_+-]+\.so'
# (grep -v exits 1 when it prints nothing, which is the good case.)
unexpected=$(find "$root" ! -type d -printf '%P\n' | { grep -v -E "^($allowed)\$" || true; })
[[ -z $unexpected ]] || fail "files the image should not have: $unexpected"
[[ ! -e $root/bin/sh ]] || fail "the image has a shell"
[[ $(stat -c %a "$root/tmp") == 1777 ]] || fail "/tmp is mode $(stat -c %a "$root/tmp"), not 1777"
grep -q '^nonroot:x:65532:65532:' "$root/etc/passwd" || fail "no nonroot (65532) in /etc/passwd"
grep -q '^nonroot:x:65532:' "$root/etc/group" || fail "no nonroot (65532) in /etc/group"
say "the image's files:"
(cd "$root" && find . ! -type d -printf '  %10s  %P\n' | sort -k2) >&2

size=$("$engine" image inspect --format '{{.Size}}' "$tag")
size_mb=$(awk -v b="$size" 'BEGIN { printf "%.1f", b / 1e6 }')
((size < max_size)) || fail "the image is $size bytes ($size_mb MB), not under 40 MB"

# Steps 3 and 4, in namespaces of their own; they end with the script.
unshare --net --mount --pid --fork --kill-child "$0" --inside "$work"

say "passed: $tag built in $build_seconds s, $size bytes ($size_mb MB);" \
  "its bulwark answered /healthz, /ready and a proxied request as uid 65532"
