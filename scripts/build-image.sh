#!/usr/bin/env bash
# Builds bulwark's container image from the Dockerfile, with docker (when its daemon answers) or
# podman, and prints the image's size.
#
#   scripts/build-image.sh [--tag NAME] [--engine docker|podman]
#
#   --tag NAME     the image's name (default bulwark:VERSION, VERSION from CMakeLists.txt)
#   --engine E     docker or podman, instead of the first of them that works
#
# The Dockerfile starts FROM debian:12. When the engine does not have that image and cannot pull
# it (no registry reachable, as on machines that reach only a Debian mirror), this script makes
# it: `debootstrap --variant=minbase bookworm` from the Debian mirror apt uses here (its
# sources.list then names the same mirror, so apt-get works in the build), imported under the
# name the Dockerfile uses. An existing base image is reused, and the engine's layer cache makes
# a second build quick; `podman rmi debian:12` forces a fresh base.
#
# podman builds with --isolation chroot: it needs no cgroups, which these machines lack (and for
# the same reason `podman run` fails here; scripts/test-image.sh runs the image another way).
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,18s/^# \{0,1\}//p' "$0"; }
die() { echo "build-image: $*" >&2; exit 1; }

version=$(sed -n 's/^project(bulwark VERSION \([0-9.]*\).*/\1/p' CMakeLists.txt)
[[ -n $version ]] || die "no 'project(bulwark VERSION x.y.z ...)' line in CMakeLists.txt"
tag="bulwark:$version"
engine=""
while (($# > 0)); do
  case $1 in
    --tag) [[ $# -ge 2 ]] || die "--tag needs a name"; tag=$2; shift 2 ;;
    --engine) [[ $# -ge 2 ]] || die "--engine needs docker or podman"; engine=$2; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument '$1'" ;;
  esac
done

# shellcheck source=scripts/lib/engine.sh
. scripts/lib/engine.sh  # the scripts run from the repository root
[[ -n $engine ]] || engine=$(find_container_engine)
[[ -n $engine ]] ||
  die "no container engine: neither a docker daemon that answers 'docker info' nor podman" \
    "(Debian: apt-get install podman)"
case $engine in
  docker) build_options=() ;;
  podman) build_options=(--isolation chroot) ;;
  *) die "--engine must be docker or podman, not '$engine'" ;;
esac
command -v "$engine" >/dev/null || die "$engine is not installed"

# The first stage's base, as the Dockerfile names it.
base=$(sed -n 's/^FROM \([^ ]*\) AS build$/\1/p' Dockerfile)
[[ $base == debian:12 ]] ||
  die "the Dockerfile's build stage is FROM '$base'; this script knows how to make debian:12 only"

# The URI of the Debian mirror apt uses for bookworm, from the one-line format
# ("deb [options] URI bookworm main") or the deb822 format (stanzas with URIs: and Suites:).
debian_mirror() {
  local files=(/etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources)
  local existing=()
  for f in "${files[@]}"; do [[ -f $f ]] && existing+=("$f"); done
  ((${#existing[@]} > 0)) || return 0
  awk '
    /^[[:space:]]*#/ { next }
    FILENAME ~ /\.list$/ && $1 == "deb" {
      i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
      if ($(i + 1) == "bookworm") { print $i; exit }
      next
    }
    FILENAME ~ /\.sources$/ {
      if ($0 ~ /^[[:space:]]*$/) { uri = ""; suites = ""; next }
      if ($1 == "URIs:") uri = $2
      if ($1 == "Suites:") suites = " " substr($0, index($0, ":") + 1) " "
      if (uri != "" && suites ~ / bookworm /) { print uri; exit }
    }' "${existing[@]}"
}

make_base_with_debootstrap() {
  command -v debootstrap >/dev/null ||
    die "cannot pull $base and debootstrap is not installed to make it (apt-get install debootstrap)"
  [[ $(id -u) -eq 0 ]] || die "debootstrap must run as root to make $base"
  local mirror
  mirror=$(debian_mirror)
  [[ -n $mirror ]] ||
    die "no bookworm entry in /etc/apt/sources.list or /etc/apt/sources.list.d/ to take a mirror from"
  local dir
  dir=$(mktemp -d /var/tmp/bulwark-debian12.XXXXXX)
  trap 'rm -rf "$dir"' EXIT
  echo "build-image: making $base with debootstrap --variant=minbase bookworm from $mirror" >&2
  debootstrap --variant=minbase bookworm "$dir" "$mirror" >"$dir.log" 2>&1 ||
    { tail -n 20 "$dir.log" >&2; die "debootstrap failed (whole log: $dir.log)"; }
  rm -f "$dir.log"
  # The container engine gives a container its own resolv.conf and hosts; the host's copies
  # that debootstrap left are not part of the image.
  rm -f "$dir/etc/resolv.conf" "$dir/etc/hostname"
  rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/*
  tar -C "$dir" -c . | "$engine" import - "$base" >/dev/null
  rm -rf "$dir"
  trap - EXIT
}

start=$SECONDS
if "$engine" image inspect "$base" >/dev/null 2>&1; then
  echo "build-image: reusing the $engine image $base" >&2
elif "$engine" pull "docker.io/library/$base" >/dev/null 2>&1; then
  echo "build-image: pulled $base" >&2
else
  make_base_with_debootstrap
fi

echo "build-image: $engine build -t $tag ." >&2
"$engine" build "${build_options[@]}" -t "$tag" -f Dockerfile .

size=$("$engine" image inspect --format '{{.Size}}' "$tag")
echo "build-image: built $tag with $engine in $((SECONDS - start)) s;" \
  "size $size bytes ($(awk -v b="$size" 'BEGIN { printf "%.1f", b / 1e6 }') MB)"
