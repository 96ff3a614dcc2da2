// Entry point for Cloudflare Workers and workerd: the wasm comes in as a
// compiled WebAssembly.Module (these runtimes refuse to compile wasm from
// bytes at run time), so it is instantiated synchronously at load.
import wasmModule from "./pkg/rollout_router_js_bg.wasm";
import { initSync } from "./pkg/rollout_router_js.js";
import { handleRequest } from "./handler.mjs";

initSync({ module: wasmModule });

export default {
  fetch(request, env) {
    // Cloudflare's runtime holds header values as UTF-8 text.
    return handleRequest(request, env, { headerEncoding: "utf-8" });
  },
};
