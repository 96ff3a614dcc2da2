#!/usr/bin/env bash
# Measures the router and prints one table (BENCHMARKS.md explains it).
#
#   scripts/bench.sh [--smoke] [decision|hop|propagation|cold|js ...]
#
# --smoke runs a few iterations of everything in seconds, so CI catches a
# harness that no longer works; its output is not figures. Sections default
# to all. The table is also written to target/bench/results.md.
set -euo pipefail
cd "$(dirname "$0")/.."

smoke=()
sections=()
js=0
for arg in "$@"; do
    case "$arg" in
        --smoke) smoke=(--smoke) ;;
        decision|hop|propagation|cold) sections+=("$arg") ;;
        js) js=1 ;;
        *) echo "usage: scripts/bench.sh [--smoke] [decision|hop|propagation|cold|js ...]" >&2; exit 2 ;;
    esac
done

# The edge hop is measured against Debian's nginx, with wrk as the client.
if ! command -v nginx >/dev/null || ! command -v wrk >/dev/null; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq --no-install-recommends nginx-light wrk \
        || $sudo apt-get install -y -qq --no-install-recommends nginx wrk
fi
# Debian starts the packaged nginx on port 80; the benchmark runs its own.
rustup target add wasm32-wasip2 >/dev/null

# The edge component, and the kernel component the decision section times
# bucket_of, decide() and a request's routing work in.
cargo build --locked --release --target wasm32-wasip2 -p rollout-router -p rollout-kernel
if [ ${#smoke[@]} -gt 0 ]; then
    # Smoke: the debug builds the tests already made (dependencies optimised),
    # and criterion for a fraction of a second per benchmark.
    profile=debug
    cargo build --locked -p rollout-host -p rollout-control -p rollout-bench
    criterion=(--warm-up-time 0.1 --measurement-time 0.2 --sample-size 10 'bucket_of|decide')
else
    profile=release
    cargo build --locked --release -p rollout-host -p rollout-control -p rollout-bench
    criterion=()
fi
cargo bench --locked -p rollout-core --bench core -- "${criterion[@]}"

mkdir -p target/bench
if [ ${#sections[@]} -gt 0 ] || [ "$js" -eq 0 ]; then
    "target/$profile/rollout-bench" "${smoke[@]}" --out target/bench/results.md "${sections[@]}"
fi

# The JavaScript edge's per-request cost (Node in process, and the hop
# through Node and workerd): with every section, or when asked for.
if [ ${#sections[@]} -eq 0 ] || [ "$js" -eq 1 ]; then
    router/js/build.sh
    (cd router/js && { [ -d node_modules/workerd ] || npm ci --no-audit --no-fund; })
    node router/js/bench/cost.mjs "${smoke[@]}"
fi
