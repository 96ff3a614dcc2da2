#!/usr/bin/env bash
# Failover of the control service's leader (control/tests/replicas.rs), on a
# real PostgreSQL started on loopback: two replicas on one store, the leader
# SIGKILLed and SIGSTOPped in the middle of a fan-out and in a plan's pause.
# Each round checks another replica leads, every edge converges on the
# committed version, a plan resumes without a step run twice, the history is
# one chain with one version per number, and a woken leader pushes nothing.
# Prints the takeover times (p50/p99) BENCHMARKS.md quotes.
#
#   scripts/failover.sh         20 rounds of each failover
#   scripts/failover.sh N       N rounds (scripts/test.sh runs 3 through
#                               cargo test, the default)
set -euo pipefail
cd "$(dirname "$0")/.."

rounds="${1:-20}"
case "$rounds" in
    ''|*[!0-9]*) echo "usage: scripts/failover.sh [ROUNDS]" >&2; exit 2 ;;
esac
start=$(date +%s)
ROLLOUT_FAILOVER_ROUNDS="$rounds" cargo test --locked -p rollout-control --test replicas \
    -- --nocapture --test-threads 1 2>&1 | grep -E '^test |takeover|set-weight calls|test result|panicked|assert'
echo "failover: $rounds rounds each in $(( $(date +%s) - start )) s"
