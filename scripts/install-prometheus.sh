#!/usr/bin/env bash
# Install the Prometheus server for kadapt's metrics end-to-end test (and nothing else needs it).
#
# In this order, stopping at the first that works:
#   1. a `prometheus` already on PATH or in the virtual environment's bin/: nothing to do;
#   2. as root (or with password-less sudo) on Debian/Ubuntu: the distribution's package
#      `prometheus` through apt-get, its service kept from starting (the test runs its own);
#   3. without root, where apt-get exists: the same package fetched with `apt-get download`
#      (no root needed; with a private package list when the system has none) and unpacked with
#      `dpkg-deb -x`, its binary copied into the virtual environment's bin/ (user level);
#   4. otherwise: a note, and exit 0. The test then skips with a reason that names this script.
#
# Idempotent and fast on a second run (step 1). Environment: KADAPT_VENV (default .venv).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${KADAPT_VENV:-.venv}
BIN="$VENV/bin"

if command -v prometheus >/dev/null 2>&1; then
  echo "prometheus already installed: $(command -v prometheus)"
  exit 0
fi
if [ -x "$BIN/prometheus" ]; then
  echo "prometheus already installed: $BIN/prometheus"
  exit 0
fi

skip() {
  echo "install-prometheus.sh: $*; the Prometheus end-to-end test will be skipped" >&2
  exit 0
}

command -v apt-get >/dev/null 2>&1 || skip "no apt-get here (not Debian/Ubuntu); put a prometheus binary on PATH to run it"

SUDO=""
ROOT=0
if [ "$(id -u)" -eq 0 ]; then
  ROOT=1
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  SUDO="sudo -n"
  ROOT=1
fi
export DEBIAN_FRONTEND=noninteractive

if [ "$ROOT" -eq 1 ]; then
  if ! apt-cache show prometheus >/dev/null 2>&1; then
    $SUDO apt-get update -q
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
  $SUDO apt-get install -y -q --no-install-recommends prometheus
  command -v prometheus >/dev/null 2>&1 || skip "apt-get finished but no prometheus binary is on PATH"
  prometheus --version 2>&1 | head -n 1
  exit 0
fi

# No root: fetch the .deb as this user and unpack only its binary.
[ -d "$BIN" ] || skip "no virtual environment at $VENV to put the binary in; run scripts/setup.sh first"
command -v dpkg-deb >/dev/null 2>&1 || skip "no dpkg-deb to unpack the Debian package"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if ! (cd "$work" && apt-get download prometheus >/dev/null 2>&1); then
  # No usable system package lists (and we may not write them): fetch a private set.
  mkdir -p "$work/lists/partial" "$work/cache/archives/partial"
  apt_opts=(-o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache" -o Debug::NoLocking=1)
  apt-get "${apt_opts[@]}" update -q >/dev/null 2>&1 || skip "apt-get update (as a user, private lists) failed"
  (cd "$work" && apt-get "${apt_opts[@]}" download prometheus >/dev/null) \
    || skip "apt-get download prometheus failed (no Debian package source reachable?)"
fi
deb=$(ls "$work"/prometheus_*.deb 2>/dev/null | head -n 1 || true)
[ -n "$deb" ] || skip "apt-get download left no prometheus_*.deb"
dpkg-deb -x "$deb" "$work/root"
[ -x "$work/root/usr/bin/prometheus" ] || skip "the package holds no usr/bin/prometheus"
install -m 0755 "$work/root/usr/bin/prometheus" "$BIN/prometheus"
echo "prometheus installed without root: $BIN/prometheus"
"$BIN/prometheus" --version 2>&1 | head -n 1
