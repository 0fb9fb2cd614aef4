#!/usr/bin/env bash
# Everything the sandbox and the tests need, installed only when missing:
# Debian packages, a Python virtual environment, a Docker engine, the sandbox base image.
# Safe to run again: each step checks before it acts.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV="$ROOT/.venv"
say() { printf '\n==> %s\n' "$*" >&2; }
die() { printf '\nerror: %s\n' "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo "$@"
  else die "'$*' needs root. Run this script as root, or install the packages yourself: sudo apt-get install -y ${MISSING_PACKAGES:-docker.io docker-registry debootstrap chromium}"
  fi
}

# 1. Debian packages: the Docker engine, the registry, debootstrap (and Chromium for browser tests).
MISSING_PACKAGES=""
command -v dockerd >/dev/null || MISSING_PACKAGES+=" docker.io"
command -v docker-registry >/dev/null || MISSING_PACKAGES+=" docker-registry"
command -v debootstrap >/dev/null || MISSING_PACKAGES+=" debootstrap"
[ -x /usr/bin/chromium ] || MISSING_PACKAGES+=" chromium"  # tests/test_browser.py only
if [ -n "$MISSING_PACKAGES" ]; then
  command -v apt-get >/dev/null || die "missing:$MISSING_PACKAGES, and this is not a Debian/Ubuntu machine: install Docker and a registry by hand (and Chromium at /usr/bin/chromium for the browser tests)."
  say "Installing Debian packages:$MISSING_PACKAGES"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
  # shellcheck disable=SC2086
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $MISSING_PACKAGES
fi

# 2. The Python environment (re-installed when pyproject.toml changes).
PYTHON=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
  say "Creating the virtual environment $VENV"
  "$PYTHON" -m venv "$VENV"
fi
STAMP="$VENV/.sm-magics-installed"
WANT=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  say "Installing sm-magics and its test dependencies into $VENV (a few minutes the first time)"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  # the SageMaker SDK at the version the tests use it as a client of the sandbox
  "$VENV/bin/python" -m pip install -q -e ".[test,sdk]" "sagemaker==3.27.0"
  echo "$WANT" > "$STAMP"
fi

# 3. A Docker engine: use the one that answers, else start one with no bridge network.
if ! docker info >/dev/null 2>&1; then
  say "Starting the Docker engine (dockerd --bridge=none --iptables=false)"
  [ "$(id -u)" -eq 0 ] || die "no Docker engine answers and starting one needs root: sudo dockerd --bridge=none --iptables=false &"
  mkdir -p /var/log
  nohup dockerd --bridge=none --iptables=false >/var/log/sm-magics-dockerd.log 2>&1 &
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
  docker info >/dev/null 2>&1 || die "dockerd did not start; see /var/log/sm-magics-dockerd.log"
fi

# 4. The sandbox's offline base image (built once from Debian packages, then cached).
"$VENV/bin/python" -m sm_magics sandbox base-image
