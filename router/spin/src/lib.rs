//! rollout-router: the edge. A wasi:http component (spin-sdk 5.2.0, WASI 0.2)
//! that routes every request to the old or new origin by the signed config in
//! its key-value store, and applies pushes on `/.well-known/rollout/config`.
//!
//! Every rule comes from `rollout-core`'s edge machines; this crate only moves
//! bytes between them and wasi:http, the key-value store and the variables. Build: `cargo build --release --target wasm32-wasip2 -p rollout-router`.

#[cfg(target_arch = "wasm32")]
mod component;
