# The container engine to build and read images with, for scripts/build-image.sh and
# scripts/test-image.sh: prints "docker" when a docker daemon answers `docker info` (a docker
# client without a daemon is common: a CI image, a remote context that is down), else "podman"
# when it is installed, else nothing.
find_container_engine() {
  if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
    echo docker
  elif command -v podman >/dev/null; then
    echo podman
  fi
}
