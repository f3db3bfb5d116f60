#!/usr/bin/env bash
# Install the Prometheus server (Debian package `prometheus`) for kadapt's metrics e2e test.
#
# Idempotent: does nothing when a `prometheus` binary is already on PATH. Runs
# `apt-get update` only when apt has no package lists yet (or the package is unknown),
# so repeated set-ups stay fast and offline-friendly. The Debian package would start a
# system service where systemd runs; the test starts its own server on a free port, so
# policy-rc.d keeps the service from starting during installation.
set -euo pipefail

if command -v prometheus >/dev/null 2>&1; then
  echo "prometheus already installed: $(command -v prometheus)"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
  else
    echo "install-prometheus.sh: need root (or sudo) to apt-get install prometheus" >&2
    exit 1
  fi
fi

export DEBIAN_FRONTEND=noninteractive

if ! apt-cache show prometheus >/dev/null 2>&1; then
  $SUDO apt-get update
fi

# Keep dpkg from starting the packaged service (the test runs its own server).
POLICY=/usr/sbin/policy-rc.d
CREATED_POLICY=0
if [ ! -e "$POLICY" ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$POLICY" >/dev/null
  $SUDO chmod +x "$POLICY"
  CREATED_POLICY=1
fi
cleanup() {
  if [ "$CREATED_POLICY" -eq 1 ]; then
    $SUDO rm -f "$POLICY"
  fi
}
trap cleanup EXIT

$SUDO apt-get install -y --no-install-recommends prometheus

command -v prometheus >/dev/null 2>&1 || {
  echo "install-prometheus.sh: apt-get finished but no prometheus binary on PATH" >&2
  exit 1
}
prometheus --version 2>&1 | head -n 1
