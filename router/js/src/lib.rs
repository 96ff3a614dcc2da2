//! rollout-router-js: the edge for JavaScript runtimes (Cloudflare Workers and
//! workerd, Deno, Node). rollout-core built for `wasm32-unknown-unknown` with
//! wasm-bindgen bindings, used by the fetch handler in `handler.mjs`.
//!
//! Every rule comes from `rollout-core`'s edge machines: the bindings only
//! translate between JavaScript values and core, so a JavaScript edge answers
//! byte for byte as the Spin component does. [`edge`] and [`plan`] are the
//! host-independent layers, tested natively; the bindings exist only in the
//! wasm build.
//!
//! Build: `router/js/build.sh` (cargo with the `release-js` profile, then
//! `wasm-bindgen --target web` into `router/js/pkg/`). Test: `router/js/test.sh`.

pub mod edge;
pub mod plan;

#[cfg(target_arch = "wasm32")]
mod bindings;
