#!/usr/bin/env bash
# Run the whole test suite several times back to back on a fresh clone, one run under extra CPU
# load, and print each run's wall time and failures: a suite that is green only on a quiet
# machine, or only sometimes, shows up here.
#
#   scripts/stress-tests.sh                     # 3 runs of scripts/test.sh, the last one under load
#   scripts/stress-tests.sh tests/local -m "not slow"   # arguments go to pytest (a short subset)
#
# What it does:
#   1. clones this repository's committed HEAD into a temporary folder (uncommitted edits are
#      not part of it: commit first), and sets it up there with scripts/setup.sh (timed apart);
#   2. installs a CPU load generator: Debian's stress-ng (apt-get as root; without root the
#      package is fetched with `apt-get download` and unpacked into the clone's venv when its
#      libraries are present); where neither works, plain Python busy loops stand in;
#   3. runs scripts/test.sh (ruff, mypy, pytest) KADAPT_STRESS_RUNS times (default 3); run number
#      KADAPT_STRESS_LOADED_RUN (default the last) runs while the generator keeps every core
#      KADAPT_STRESS_CPU_LOAD percent busy (default 50);
#   4. prints one line per run (wall time, exit code, pytest's summary) and exits non-zero
#      unless every run passed. Logs stay in the clone's folder (printed); KADAPT_STRESS_KEEP=0
#      removes it at the end.
set -euo pipefail

RUNS=${KADAPT_STRESS_RUNS:-3}
LOADED=${KADAPT_STRESS_LOADED_RUN:-$RUNS}
LOAD=${KADAPT_STRESS_CPU_LOAD:-50}
KEEP=${KADAPT_STRESS_KEEP:-1}
REPO=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)
CORES=$(nproc)

WORK=$(mktemp -d "${TMPDIR:-/tmp}/kadapt-stress.XXXXXX")
CLONE="$WORK/kadapt"
LOAD_PIDS=()
stop_load() {
  local pid
  for pid in "${LOAD_PIDS[@]+"${LOAD_PIDS[@]}"}"; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  LOAD_PIDS=()
}
finish() {
  stop_load
  if [ "$KEEP" = "0" ]; then rm -rf "$WORK"; fi
}
trap finish EXIT

echo "== fresh clone of $(git -C "$REPO" rev-parse --short HEAD) in $CLONE"
git clone --quiet --no-hardlinks "$REPO" "$CLONE"

cd "$CLONE"
t0=$(date +%s)
scripts/setup.sh
echo "== setup: $(( $(date +%s) - t0 )) s"

# --- the load generator ------------------------------------------------------------------------
STRESS=""
if command -v stress-ng >/dev/null 2>&1; then
  STRESS=$(command -v stress-ng)
elif command -v apt-get >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ]; then
    apt-cache show stress-ng >/dev/null 2>&1 || apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends stress-ng >/dev/null \
      && STRESS=$(command -v stress-ng || true)
  else
    deb_dir="$WORK/stress-deb"
    mkdir -p "$deb_dir"
    if (cd "$deb_dir" && apt-get download stress-ng >/dev/null 2>&1); then
      dpkg-deb -x "$deb_dir"/stress-ng_*.deb "$deb_dir/root"
      if "$deb_dir/root/usr/bin/stress-ng" --version >/dev/null 2>&1; then
        install -m 0755 "$deb_dir/root/usr/bin/stress-ng" .venv/bin/stress-ng
        STRESS="$CLONE/.venv/bin/stress-ng"
      fi
    fi
  fi
fi
start_load() {
  if [ -n "$STRESS" ]; then
    "$STRESS" --cpu "$CORES" --cpu-load "$LOAD" --quiet &
    LOAD_PIDS+=($!)
    echo "   load: $STRESS --cpu $CORES --cpu-load $LOAD"
  else
    local i
    for ((i = 0; i < CORES; i++)); do
      # busy LOAD ms of every 100 ms, per core
      python3 -c "import time
while True:
    end = time.monotonic() + $LOAD / 1000
    while time.monotonic() < end: pass
    time.sleep((100 - $LOAD) / 1000)" &
      LOAD_PIDS+=($!)
    done
    echo "   load: $CORES Python busy loops at $LOAD% (no stress-ng could be installed here)"
  fi
}
echo "== load generator: ${STRESS:-Python busy loops (stress-ng unavailable)}"

# --- the runs ----------------------------------------------------------------------------------
declare -a SUMMARY
status=0
for ((run = 1; run <= RUNS; run++)); do
  log="$WORK/run-$run.log"
  label="quiet"
  echo "== run $run of $RUNS -> $log"
  if [ "$run" -eq "$LOADED" ]; then
    label="under load"
    start_load
  fi
  t0=$(date +%s)
  set +e
  scripts/test.sh -p no:cacheprovider "$@" >"$log" 2>&1
  rc=$?
  set -e
  wall=$(( $(date +%s) - t0 ))
  stop_load
  # pytest's closing line, with or without its ===== frame (-q drops it)
  result=$(grep -E '(passed|failed|error|no tests ran).* in [0-9.]+s' "$log" | tail -n 1 | tr -d '=' | xargs || true)
  [ -n "$result" ] || result="no pytest summary (see the log: ruff or mypy failed?)"
  failed=$( (grep -oE '[0-9]+ (failed|errors?)' <<<"$result" || true) | awk '{s += $1} END {print s + 0}')
  line="run $run ($label): wall ${wall} s, exit $rc, failures $failed: $result"
  echo "   $line"
  SUMMARY+=("$line")
  if [ "$rc" -ne 0 ]; then
    status=1
    grep -E '^(FAILED|ERROR) ' "$log" | head -n 20 | sed 's/^/     /' || true
  fi
done

echo "== summary (commit $(git rev-parse --short HEAD), $CORES cores, logs in $WORK)"
printf '   %s\n' "${SUMMARY[@]}"
exit "$status"
