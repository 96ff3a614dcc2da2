#!/usr/bin/env bash
# Runs every test the project has. Installs what a fresh machine lacks first,
# so it works on a new checkout as it is.
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target add wasm32-wasip2 wasm32-unknown-unknown >/dev/null
# Debian packages the end-to-end tests run: a real Prometheus, and PostgreSQL
# (control/tests/data.rs runs its server binaries from
# /usr/lib/postgresql/<N>/bin, which is not on PATH). The postgresql package
# creates a `main` cluster on port 5432 and may start it as a service; the
# tests use clusters of their own on free ports and do not touch it. The
# dashboard's browser tests drive Debian's chromium (Playwright's own browser
# download is not used).
missing=()
command -v prometheus >/dev/null || missing+=(prometheus)
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql)
# The TLS test certifies its PostgreSQL server with the openssl CLI.
command -v openssl >/dev/null || missing+=(openssl)
[ -x /usr/bin/chromium ] || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
if [ "$(wasm-bindgen --version 2>/dev/null)" != "wasm-bindgen 0.2.130" ]; then
    # Its own lock file pins a crate the registry lacks, so not --locked.
    cargo install wasm-bindgen-cli --version 0.2.130
fi

# The kernel must build for every target it claims.
cargo build --locked -p rollout-core --target wasm32-wasip2
cargo build --locked -p rollout-core --target wasm32-unknown-unknown

# The edge component the end-to-end tests run (its size is part of the
# budget), the kernel component they check the bucket vectors in, and the
# pass-through component (the edge-hop benchmark's floor) they check is pure
# wasi:http.
cargo build --locked --release --target wasm32-wasip2 -p rollout-router -p rollout-kernel -p rollout-passthrough
wasm=target/wasm32-wasip2/release/rollout_router.wasm
echo "edge component: $(stat -c %s "$wasm") bytes ($wasm; budget 1 MiB)"
[ "$(stat -c %s "$wasm")" -le $((1024 * 1024)) ] || { echo "component is over 1 MiB" >&2; exit 1; }

# `rollout up`'s test starts the rollout-host binary next to `rollout`.
# Built with rollout-control in one invocation, as every other script
# builds it: dependency features then resolve as they do for the tests, and
# wasmtime and its stack are compiled once, not once more for rollout-host
# alone (about 5 minutes and 1.5 GB of a cold run).
cargo build --locked -p rollout-host -p rollout-control
cargo test --locked --workspace

# The control service's suite again with its store in PostgreSQL: each
# service in a database of its own on a cluster the test binary starts.
# (replicas and crash are left out: replicas always runs on PostgreSQL, in the
# line above; crash runs through scripts/crash.sh below.) rollout-core is
# selected too, only so that its dev-dependencies resolve dependency
# features as in the workspace run above: the test binaries are then the
# ones already built, not a second build of the control service (its lib
# tests and adversarial_keys, a few seconds, run again with it).
ROLLOUT_TEST_STORE=postgres cargo test --locked -p rollout-control -p rollout-core --lib --bins \
    --test adversarial_keys --test audit --test control --test dashboard_api \
    --test data --test examples --test hooks --test plans

# Crash loops, short form: SIGKILL edges and the control service mid-push
# and restart them (scripts/crash.sh runs the full counts on demand), with
# the service's store in SQLite, then in PostgreSQL.
scripts/crash.sh --ci
ROLLOUT_TEST_STORE=postgres scripts/crash.sh --ci

# Canary plans end to end, twice each (scripts/soak.sh runs them 20 and 50
# times on demand). The Prometheus check's test needs a real Prometheus.
scripts/soak.sh --runs 2

# The JavaScript edge: build (reports the .wasm size, fails over 500 KiB),
# then the bindings in Node and the worker in workerd on loopback.
router/js/test.sh

# The dashboard: its committed build matches a rebuild from control/ui/src,
# then the browser tests in Debian's chromium against a real control service
# and real edges (rollout up).
control/ui/test.sh
