#!/usr/bin/env bash
# Builds the JavaScript edge into router/js/pkg/: rollout-router-js for
# wasm32-unknown-unknown (profile release-js), then the ES module glue with
# wasm-bindgen-cli (--target web, which loads the same way in Workers, Deno
# and Node). Prints the size of the .wasm and fails over the 500 KiB budget.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"

# The CLI must be the exact version of the wasm-bindgen crate (Cargo.toml pins
# it), or the glue and the module disagree about their ABI.
want=0.2.130
have="$(wasm-bindgen --version 2>/dev/null || true)"
if [ "$have" != "wasm-bindgen $want" ]; then
    echo "router/js/build.sh: needs wasm-bindgen-cli $want (found: ${have:-none})." >&2
    echo "  cargo install wasm-bindgen-cli --version $want" >&2
    exit 1
fi

cd "$root"
cargo build --locked -p rollout-router-js --target wasm32-unknown-unknown --profile release-js
target_dir="${CARGO_TARGET_DIR:-$root/target}"
input="$target_dir/wasm32-unknown-unknown/release-js/rollout_router_js.wasm"

out="$here/pkg"
rm -rf "$out"
# --omit-default-module-path: the glue never guesses the .wasm's location
# from import.meta.url (Workers bundlers and Node 20 cannot fetch it); every
# runtime hands it the module or bytes with initSync({ module }).
wasm-bindgen --target web --remove-name-section --remove-producers-section \
    --omit-default-module-path --out-dir "$out" "$input"
# Node reads a .js file as CommonJS unless a package.json says otherwise.
echo '{ "type": "module" }' > "$out/package.json"

wasm="$out/rollout_router_js_bg.wasm"
bytes="$(wc -c < "$wasm")"
budget=$((500 * 1024))
kib="$(awk -v b="$bytes" 'BEGIN { printf "%.1f", b / 1024 }')"
echo "router/js: rollout_router_js_bg.wasm is $bytes bytes ($kib KiB; budget 500 KiB)"
if [ "$bytes" -gt "$budget" ]; then
    echo "router/js: the .wasm is over its 500 KiB budget" >&2
    exit 1
fi
