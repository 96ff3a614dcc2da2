#!/usr/bin/env bash
# Canary plans end to end, many times over: a control service, two edges and
# two origins on loopback, `rollout canary --wait` with the defaults.
#   - bad: new fails 20 % of requests, old 1 %. Every run must roll back on
#     every edge within interval × failure_limit + 2 s (22 s) of the 10 % step.
#   - good: both arms fail 1 %. Every run must promote.
#
#   scripts/soak.sh                  20 bad runs and 50 good ones (about 30 min)
#   scripts/soak.sh --runs N         N of each (scripts/test.sh runs 2)
#   scripts/soak.sh --bad N --good M
#
# Prints each run's figure and a summary; exits non-zero if any run failed.
set -euo pipefail
cd "$(dirname "$0")/.."

bad=20
good=50
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) bad="$2"; good="$2"; shift 2 ;;
        --bad) bad="$2"; shift 2 ;;
        --good) good="$2"; shift 2 ;;
        *) echo "usage: scripts/soak.sh [--runs N | --bad N --good M]" >&2; exit 2 ;;
    esac
done

# The tests run the released edge component in-process.
cargo build --locked --release --target wasm32-wasip2 -p rollout-router
# With rollout-core selected, dependency features resolve as in
# `cargo test --workspace`, so scripts/test.sh's build is reused.
cargo test --locked -p rollout-control -p rollout-core --test plans --no-run

run() { # name, label of the printed figure
    cargo test --locked -q -p rollout-control -p rollout-core --test plans -- \
        --ignored --exact --nocapture "$1" 2>&1 | grep -E "^$2" || return 1
}

failed=0
# runs KIND COUNT TEST LABEL SED: COUNT runs of TEST; each figure goes to
# the array KIND_s, read from the printed LABEL line with SED.
runs() {
    local kind="$1" count="$2" test="$3" label="$4" pattern="$5" line
    local -n figures="${kind}_s"
    for i in $(seq 1 "$count"); do
        if line=$(run "$test" "$label"); then
            echo "$kind $i/$count: $line"
            figures+=("$(sed -E "$pattern" <<<"$line")")
        else
            echo "$kind $i/$count: FAILED"
            failed=$((failed + 1))
        fi
    done
}
bad_s=()
good_s=()
runs bad "$bad" canary_a_new_arm_failing_20_percent_is_rolled_back_on_every_edge_within_the_bound \
    "bad canary:" 's/.* ([0-9.]+) s after.*/\1/'
runs good "$good" canary_equal_error_rates_on_both_arms_are_promoted \
    "good canary:" 's/.*promoted in ([0-9.]+) s.*/\1/'

summary() { # label, values...
    local label="$1"; shift
    if [ $# -eq 0 ]; then echo "$label: no successful runs"; return; fi
    printf '%s\n' "$@" | sort -g | awk -v l="$label" '
        { v[NR] = $1 }
        END { printf "%s: %d runs, min %.1f s, median %.1f s, max %.1f s\n", l, NR, v[1], v[int((NR + 1) / 2)], v[NR] }'
}
echo
summary "bad canary, every edge at 0 % after the 10 % step (bound 22 s)" "${bad_s[@]}"
summary "good canary, promoted after" "${good_s[@]}"
echo "failed runs: $failed of $((bad + good))"
[ "$failed" -eq 0 ]
