#!/usr/bin/env bash
# Runs the whole system locally: `rollout up` (a control service, two edges
# running the built component in rollout-host, two demo origins, a 10 %
# canary). Builds what it needs first, so it works on a fresh checkout.
# Arguments are passed to `rollout up` (see `rollout up --help`).
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target add wasm32-wasip2 >/dev/null
# The edge component, as edges run it.
cargo build --locked --release --target wasm32-wasip2 -p rollout-router
# The local edge host and the control service/CLI. Debug builds: their
# dependencies (wasmtime included) are optimised even there, see Cargo.toml.
cargo build --locked -p rollout-host -p rollout-control

exec target/debug/rollout up "$@"
