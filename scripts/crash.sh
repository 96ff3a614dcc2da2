#!/usr/bin/env bash
# Crash loops (control/tests/crash.rs): SIGKILL edges and the control service
# at random moments, restart them on the same stores, and check that
# nothing acknowledged or reported was lost. Edges keep SQLite stores; the
# service keeps a SQLite file, or a PostgreSQL database (on a cluster the
# test binary starts) with ROLLOUT_TEST_STORE=postgres.
#   1. edge kill loop: rollout-host killed while 4 pushers send it versions;
#      it must restart at or above every version it ACKed, stored whole, and
#      route by what its GET reports.
#   2. control kill loop: rollout serve killed while an API and a CLI writer
#      commit and it fans out to two edges; no commit lost or duplicated, no
#      edge ahead of the store, `rollout audit --verify` passes, edges converge.
#   3. kill mid fan-out under load: 300 requests/s through two edges while
#      the service is killed between one edge's push and the other's; zero
#      errors, and both edges on the newest version after the restart.
#   4. leak check (--leak only): 10 minutes of load and a commit a second;
#      RSS and open fds of rollout serve and both rollout-hosts stay bounded.
#
#   scripts/crash.sh          1000 edge kills, 200 control kills, 20 fan-out kills
#   scripts/crash.sh --ci     50, 20 and 3 (scripts/test.sh runs this)
#   scripts/crash.sh --leak   the 10-minute leak check only
#
# Counts can also be set directly: ROLLOUT_CRASH_EDGE_KILLS,
# ROLLOUT_CRASH_CONTROL_KILLS, ROLLOUT_CRASH_FANOUT_KILLS, ROLLOUT_CRASH_RPS,
# ROLLOUT_LEAK_SECS; ROLLOUT_CRASH_SEED replays a run's random choices.
# Prints each loop's figures and wall time; exits non-zero if any loop failed.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=full
case "${1:-}" in
    "") ;;
    --ci) mode=ci ;;
    --leak) mode=leak ;;
    *) echo "usage: scripts/crash.sh [--ci | --leak]" >&2; exit 2 ;;
esac

if [ "$mode" = ci ]; then
    : "${ROLLOUT_CRASH_EDGE_KILLS:=50}" "${ROLLOUT_CRASH_CONTROL_KILLS:=20}" "${ROLLOUT_CRASH_FANOUT_KILLS:=3}"
else
    : "${ROLLOUT_CRASH_EDGE_KILLS:=1000}" "${ROLLOUT_CRASH_CONTROL_KILLS:=200}" "${ROLLOUT_CRASH_FANOUT_KILLS:=20}"
fi
export ROLLOUT_CRASH_EDGE_KILLS ROLLOUT_CRASH_CONTROL_KILLS ROLLOUT_CRASH_FANOUT_KILLS

# The loops start the rollout-host binary with the released edge component,
# and the rollout binary.
cargo build --locked --release --target wasm32-wasip2 -p rollout-router
cargo build --locked -p rollout-host -p rollout-control
# With rollout-core selected, dependency features resolve as in
# `cargo test --workspace`, so scripts/test.sh's build is reused.
cargo test --locked -p rollout-control -p rollout-core --test crash --no-run

failed=0
figures=()
loop() { # test name
    local start end out status=0
    start=$(date +%s.%N)
    out=$(cargo test --locked -q -p rollout-control -p rollout-core --test crash -- \
        --ignored --exact --nocapture "$1" 2>&1) || status=$?
    end=$(date +%s.%N)
    local wall
    wall=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
    grep -E "^(crash:|  problem:|.*seed [0-9]+)" <<<"$out" || true
    if [ "$status" -ne 0 ]; then
        echo "$1: FAILED (${wall} s wall)"
        grep -E "panicked|^thread" <<<"$out" | head -5 || true
        failed=$((failed + 1))
        figures+=("$1: FAILED")
    else
        echo "$1: ok (${wall} s wall)"
    fi
    while IFS= read -r line; do figures+=("$line (${wall} s wall)"); done < <(grep -E "^crash:" <<<"$out" || true)
}

total_start=$(date +%s)
if [ "$mode" = leak ]; then
    loop leak_check_under_load_with_pushes
else
    loop edge_kill_loop
    loop control_kill_loop
    loop control_killed_mid_fan_out_under_load
fi

echo
echo "summary ($mode, $(($(date +%s) - total_start)) s):"
printf '  %s\n' "${figures[@]}"
[ "$failed" -eq 0 ]
