#!/usr/bin/env bash
# Builds the JavaScript edge and runs its tests with Node's test runner: the
# bindings in Node (frozen vectors, shared decisions, native error messages,
# push rules) and the fetch handler in workerd on loopback.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

"$here/build.sh"

cd "$here"
# workerd comes from npm (pinned in package-lock.json); the binary ships
# inside its platform package.
if [ ! -d node_modules/workerd ]; then
    npm ci --no-audit --no-fund
fi
node --test test/*.test.mjs
