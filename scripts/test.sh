#!/usr/bin/env bash
# Runs every test the project has. Installs what a fresh machine lacks first,
# so it works on a new checkout as it is.
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target add wasm32-wasip2 wasm32-unknown-unknown >/dev/null

# The kernel must build for every target it claims.
cargo build --locked -p rollout-core --target wasm32-wasip2
cargo build --locked -p rollout-core --target wasm32-unknown-unknown

cargo test --locked --workspace
