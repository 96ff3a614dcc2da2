//! rollout-passthrough: a wasm32-wasip2 component that is a plain wasi:http
//! proxy (world `wasi:http/proxy`, no Spin imports). It forwards every request
//! to the origin named by the environment variable `ORIGIN`
//! (`scheme://host[:port]`) and relays the answer: no decision, no store.
//! The edge-hop benchmark runs it in rollout-host, `wasmtime serve` and Spin
//! as the floor the router is compared against. Not deployed.
//!
//! Build: `cargo build --release --target wasm32-wasip2 -p rollout-passthrough`
//! (`target/wasm32-wasip2/release/rollout_passthrough.wasm`), then e.g.
//! `wasmtime serve -S cli=y --env ORIGIN=http://127.0.0.1:8081 rollout_passthrough.wasm`.

#[cfg(target_arch = "wasm32")]
mod proxy;
