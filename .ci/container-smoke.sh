#!/usr/bin/env bash
# CI step for the container image: build it and run docker/smoke-test.sh when this machine can run
# containers (docker, or podman, which is configured here first when the workplace's set-up script
# is at hand); otherwise say plainly that it was skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

tools=""
for dir in "${PKGSERVER_CONTAINER_TOOLS:-}" "$PWD/../shared/tools" /work/shared/tools; do
  if [ -n "$dir" ] && [ -f "$dir/podman-setup.sh" ]; then tools=$dir; break; fi
done

engine=""
if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
  engine=docker
elif command -v podman >/dev/null && podman info >/dev/null 2>&1 && [ -f /etc/containers/containers.conf ]; then
  engine=podman
elif [ -n "$tools" ] && [ "$(id -u)" = 0 ]; then
  echo "ci: configuring podman with $tools/podman-setup.sh"
  bash "$tools/podman-setup.sh" >/dev/null && engine=podman
fi
if [ -z "$engine" ]; then
  echo "ci: SKIPPED the container smoke test: neither docker nor podman can run containers here"
  exit 0
fi

# No registry may be reachable: a local Debian base image with Python is used when there is one
# (or can be made); else the Dockerfile's default is pulled.
base=""
local_base=localhost/debian-python:bookworm
if [ "$engine" = podman ] && podman image exists "$local_base"; then
  base=$local_base
elif [ "$engine" = podman ] && [ -n "$tools" ] && [ -f "$tools/make-base-image.sh" ]; then
  echo "ci: making the base image $local_base"
  bash "$tools/make-base-image.sh" "$local_base" >/dev/null && base=$local_base
fi

# The reverse-proxy checks run the shipped nginx.conf in a host nginx.
if ! command -v nginx >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null 2>&1 || {
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null
  }
fi

echo "ci: container smoke test with $engine${base:+, BASE_IMAGE=$base}"
ENGINE=$engine BASE_IMAGE=$base PYTHON="$(command -v python)" bash docker/smoke-test.sh 2> >(
  grep -v 'unable to get systemd connection' >&2
)
