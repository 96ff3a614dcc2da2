#!/usr/bin/env bash
# Counts the instructions rollout-host executes per proxied request (valgrind's
# callgrind): once with the router, once with the pass-through component, and
# the difference, which is what the router costs over the wasi:http floor.
#
#   scripts/instructions.sh [--requests N] [--router FILE] [--passthrough FILE] [--host FILE]
#
# Unlike the wall-clock figures of scripts/bench.sh, the count does not move
# with what else the machine is doing, so it can judge a small change to the
# component or the serving path on a busy or noisy machine. It is not a
# latency: it leaves out the kernel (syscalls, loopback TCP, page faults) and
# says nothing of cache misses or of waiting. On demand, not part of CI (a
# run takes under a minute after the builds).
#
# What runs: an nginx origin (`return 200` with 13 bytes, the size the hop
# benchmark's origins answer) on two ports; rollout-host (release, one serving thread) under
# callgrind with the component; for the router, a one-route config pushed
# with `rollout push --direct` (header:x-user-id, 10 % to new); 50 requests
# to warm up, then N requests (default 500) over one kept-alive connection,
# every one with its own x-user-id, counted from the first byte of the first
# to the end of the last. Under valgrind wasmtime cannot reserve its pooling
# allocator's address space and instantiates on demand instead (it says so
# in the host log), so the instance set-up counted is the on-demand
# allocator's.
#
# --router / --passthrough / --host measure other builds (a baseline, say)
# in place of the release builds. The components are built either way (a
# no-op when they are fresh); rollout-host and the CLI only when --host is
# not given.
set -euo pipefail
cd "$(dirname "$0")/.."

requests=500
router=target/wasm32-wasip2/release/rollout_router.wasm
passthrough=target/wasm32-wasip2/release/rollout_passthrough.wasm
host=target/release/rollout-host
while [ $# -gt 0 ]; do
    case "$1" in
        --requests) requests=$2; shift 2 ;;
        --router) router=$2; shift 2 ;;
        --passthrough) passthrough=$2; shift 2 ;;
        --host) host=$2; shift 2 ;;
        *) echo "usage: scripts/instructions.sh [--requests N] [--router FILE] [--passthrough FILE] [--host FILE]" >&2; exit 2 ;;
    esac
done
case "$requests" in ''|*[!0-9]*) echo "--requests must be a positive whole number, not '$requests'" >&2; exit 2 ;; esac
requests=$((10#$requests))
[ "$requests" -gt 0 ] || { echo "--requests must be at least 1" >&2; exit 2; }

if ! command -v valgrind >/dev/null || ! command -v nginx >/dev/null || ! command -v curl >/dev/null \
    || ! command -v python3 >/dev/null; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq --no-install-recommends valgrind curl python3 nginx-light \
        || $sudo apt-get install -y -qq --no-install-recommends valgrind curl python3 nginx
fi
rustup target add wasm32-wasip2 >/dev/null
# The builds the defaults name; a file given in place of one is used as it is.
cargo build --locked --release --target wasm32-wasip2 -p rollout-router -p rollout-passthrough
if [ "$host" = target/release/rollout-host ]; then
    cargo build --locked --release -p rollout-host -p rollout-control
fi
for file in "$router" "$passthrough" "$host"; do
    [ -f "$file" ] || { echo "$file not found" >&2; exit 1; }
done

work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

old_port=$(free_port)
new_port=$(free_port)
mkdir -p "$work/nginx"
cat > "$work/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $work/nginx.pid;
error_log $work/nginx/error.log;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $work/nginx;
    proxy_temp_path $work/nginx;
    fastcgi_temp_path $work/nginx;
    uwsgi_temp_path $work/nginx;
    scgi_temp_path $work/nginx;
    server {
        listen 127.0.0.1:$old_port;
        listen 127.0.0.1:$new_port;
        location / { return 200 "hello, world\n"; }
    }
}
EOF
nginx -p "$work/nginx" -c "$work/nginx.conf" &
pids+=($!)
old=http://127.0.0.1:$old_port
new=http://127.0.0.1:$new_port
for origin in "$old" "$new"; do
    for _ in $(seq 50); do
        curl -s -m 2 -o /dev/null "$origin/" && continue 2
        sleep 0.1
    done
    echo "nginx did not answer on $origin:" >&2
    cat "$work/nginx/error.log" >&2 || true
    exit 1
done

# The CLI signs and pushes the config: the one next to the host, else any
# build of it here.
rollout=
for candidate in "$(dirname "$host")/rollout" target/release/rollout target/debug/rollout; do
    if [ -x "$candidate" ]; then rollout=$candidate; break; fi
done
[ -n "$rollout" ] || { echo "no rollout CLI next to $host: build it (cargo build -p rollout-control)" >&2; exit 1; }
public_key=$("$rollout" keygen --out "$work/key" 2>"$work/keygen.log") \
    || { echo "rollout keygen failed:" >&2; cat "$work/keygen.log" >&2; exit 1; }
cat > "$work/config.json" <<EOF
{"schema": 1, "routes": [{"id": "web", "old": "$old", "new": "$new", "new_weight": 10,
  "key": ["header:x-user-id", "cookie:rollout_id"], "assign_cookie": true}]}
EOF

# curl reads its requests from a config file: one connection, every request
# with its own key (`next` starts the next request on the same connection).
requests_file() { # prefix count port
    local i
    for i in $(seq "$2"); do
        [ "$i" -gt 1 ] && echo next
        echo "url = \"http://127.0.0.1:$3/\""
        echo "header = \"x-user-id: $1-$i\""
        echo "output = \"/dev/null\""
        echo "write-out = \"%{http_code}\\n\""
    done
}

# Every request of a curl config file answered 200 (count, file).
all_ok() {
    local codes
    codes=$(curl -s -K "$2" | grep -c '^200$' || true)
    [ "$codes" -eq "$1" ] || { echo "only $codes of $1 requests were answered 200" >&2; exit 1; }
}

# measure NAME COMPONENT HOST-FLAGS...: sets `counted` to the instructions
# per request.
measure() {
    local name=$1 component=$2
    shift 2
    local port
    port=$(free_port)
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$work/$name.%p.out" \
        "$host" --threads 1 --listen "127.0.0.1:$port" --component "$component" "$@" \
        > "$work/$name.log" 2>&1 &
    local pid=$!
    pids+=("$pid")
    local up=0
    for _ in $(seq 240); do
        if curl -s -m 5 -o /dev/null "http://127.0.0.1:$port/"; then up=1; break; fi
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.5
    done
    [ "$up" -eq 1 ] || { echo "rollout-host ($name) did not start:" >&2; tail -20 "$work/$name.log" >&2; exit 1; }
    if [ "$name" = router ]; then
        "$rollout" push --direct --edge "http://127.0.0.1:$port" --key "$work/key" \
            --record "$work/record.json" --reason "instruction count" "$work/config.json" > "$work/push.log" 2>&1 \
            || { echo "the push failed:" >&2; cat "$work/push.log" >&2; exit 1; }
        local head
        head=$(curl -s -D - -o /dev/null -H 'x-user-id: probe' "http://127.0.0.1:$port/")
        grep -qi '^x-rollout-version: *[1-9]' <<<"$head" \
            || { echo "the router did not apply the config:" >&2; echo "$head" >&2; exit 1; }
    fi
    requests_file warm 50 "$port" > "$work/warm.curl"
    requests_file "$name" "$requests" "$port" > "$work/count.curl"
    all_ok 50 "$work/warm.curl"
    callgrind_control -i on "$pid" > /dev/null
    all_ok "$requests" "$work/count.curl"
    callgrind_control -d "$pid" > /dev/null
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    local kept=() p
    for p in "${pids[@]}"; do [ "$p" = "$pid" ] || kept+=("$p"); done
    pids=("${kept[@]}")
    local dump
    dump=$(ls "$work/$name".*.out.1)
    cp "$dump" "target/instructions-$name.callgrind"
    local total
    total=$(sed -n 's/^summary: //p; s/^totals: //p' "$dump" | head -1)
    counted=$((total / requests))
}

mkdir -p target
echo "counting $requests requests each (under valgrind: about 15 s per component)" >&2
measure router "$router" --var "public_key=$public_key" --var "old_origin=$old" \
    --allow-outbound "$old" --allow-outbound "$new"
routed=$counted
measure passthrough "$passthrough" --env "ORIGIN=$old" --allow-outbound "$old"
floor=$counted
echo "instructions per proxied request (rollout-host $host, one thread; $requests requests each):"
printf '  %-14s %9d  %s\n' router "$routed" "$router" pass-through "$floor" "$passthrough"
printf '  %-14s %+9d  (%+.1f %%)\n' difference $((routed - floor)) \
    "$(python3 -c "print(($routed - $floor) * 100 / $floor)")"
echo "callgrind files (callgrind_annotate reads them): target/instructions-router.callgrind, target/instructions-passthrough.callgrind"
