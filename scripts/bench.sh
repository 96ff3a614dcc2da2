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

# The edge hop is measured against Debian's nginx and HAProxy, with wrk as
# the client.
if ! command -v nginx >/dev/null || ! command -v wrk >/dev/null || ! command -v haproxy >/dev/null; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq --no-install-recommends nginx-light wrk haproxy \
        || $sudo apt-get install -y -qq --no-install-recommends nginx wrk haproxy
fi
# Debian may start the packaged nginx (on port 80) and HAProxy as services;
# the benchmark runs its own.
rustup target add wasm32-wasip2 >/dev/null

# The edge component, the kernel component the decision section times
# bucket_of, decide() and a request's routing work in, and the pass-through
# component (pure wasi:http) the edge hop compares hosts with.
cargo build --locked --release --target wasm32-wasip2 -p rollout-router -p rollout-kernel -p rollout-passthrough
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

# The edge hop also runs the pass-through under `wasmtime serve`: the full
# run installs wasmtime-cli 48.0.8 (the wasmtime rollout-host embeds) into
# target/bench-tools once, unless $WASMTIME names one. It compiles for about
# 15 minutes. Without it (and in --smoke) that path is reported as not
# measured.
wasmtime=()
hop=0
if [ ${#sections[@]} -eq 0 ] && [ "$js" -eq 0 ]; then hop=1; fi
for s in "${sections[@]}"; do if [ "$s" = hop ]; then hop=1; fi; done
if [ ${#smoke[@]} -eq 0 ] && [ "$hop" -eq 1 ] && [ -z "${WASMTIME:-}" ]; then
    if [ ! -x target/bench-tools/bin/wasmtime ]; then
        echo "installing wasmtime-cli 48.0.8 into target/bench-tools (about 15 minutes, once)" >&2
        cargo install wasmtime-cli --version 48.0.8 --locked --root target/bench-tools \
            || echo "wasmtime-cli did not install: wasmtime serve is not measured" >&2
    fi
    if [ -x target/bench-tools/bin/wasmtime ]; then
        wasmtime=(--wasmtime target/bench-tools/bin/wasmtime)
    fi
fi
cargo bench --locked -p rollout-core --bench core -- "${criterion[@]}"

mkdir -p target/bench
if [ ${#sections[@]} -gt 0 ] || [ "$js" -eq 0 ]; then
    "target/$profile/rollout-bench" "${smoke[@]}" "${wasmtime[@]}" --out target/bench/results.md "${sections[@]}"
fi

# The JavaScript edge's per-request cost (Node in process, and the hop
# through Node and workerd): with every section, or when asked for.
if [ ${#sections[@]} -eq 0 ] || [ "$js" -eq 1 ]; then
    router/js/build.sh
    (cd router/js && { [ -d node_modules/workerd ] || npm ci --no-audit --no-fund; })
    node router/js/bench/cost.mjs "${smoke[@]}"
fi
