#!/usr/bin/env bash
# The dashboard: installs its pinned tools (npm ci), rebuilds dist/ from
# src/ and checks that the rebuild gives the committed files (`rollout
# serve` embeds dist/ as it is committed), then runs the browser tests:
# Debian's chromium (/usr/bin/chromium, `apt-get install chromium`) driven
# by playwright-core against real `rollout up` environments (control
# service, rollout-host edges, demo origins).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

chromium="${ROLLOUT_CHROMIUM:-/usr/bin/chromium}"
[ -x "$chromium" ] || { echo "control/ui/test.sh: no $chromium (apt-get install chromium)" >&2; exit 1; }

cd "$here"
npm ci --no-audit --no-fund
node build.mjs
git -C "$repo" rev-parse --git-dir >/dev/null || { echo "control/ui/test.sh: $repo is not a git checkout git can read" >&2; exit 1; }
if ! git -C "$repo" diff --exit-code -- control/ui/dist; then
    echo "control/ui/test.sh: control/ui/dist differs from a rebuild of control/ui/src: run 'node control/ui/build.mjs' and commit dist/" >&2
    exit 1
fi
untracked="$(git -C "$repo" ls-files --others --exclude-standard -- control/ui/dist)"
if [ -n "$untracked" ]; then
    echo "control/ui/test.sh: not committed: $untracked" >&2
    exit 1
fi

# `rollout up` runs the debug binaries and the release edge component.
cd "$repo"
cargo build --locked -p rollout-control -p rollout-host
cargo build --locked --release --target wasm32-wasip2 -p rollout-router
cd "$here"
node --test test/*.test.mjs
