//! rollout-kernel: a wasm32-wasip2 component that exports `rollout:edge/kernel`
//! (world `kernel-component` in `wit/edge.wit`): core's bucketing function and
//! a request's routing work, built with the same toolchain and profile as the
//! edge, so the tests check the frozen vectors inside a guest and the
//! benchmark times the guest's own cost. Not deployed: the shipped edge
//! (`rollout-router`) exports only `wasi:http/incoming-handler`.
//!
//! Build: `cargo build --release --target wasm32-wasip2 -p rollout-kernel`
//! (`target/wasm32-wasip2/release/rollout_kernel.wasm`).

#[cfg(target_arch = "wasm32")]
mod kernel;
