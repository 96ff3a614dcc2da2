#!/usr/bin/env bash
# Coverage-guided fuzzing of what edges and the control service read from
# outside (fuzz/: cargo-fuzz and libFuzzer on the nightly toolchain).
#
#   scripts/fuzz.sh                 explore: every target for 1 000 000 runs,
#                                   then `cargo fuzz cmin` its corpus
#   scripts/fuzz.sh --runs N        N runs per target instead
#   scripts/fuzz.sh --max-time S    stop a target after S seconds whatever its
#                                   runs (default 1800, a safety net)
#   scripts/fuzz.sh --sanitizer S   none (default for exploring: the project's
#                                   crates forbid unsafe code, and it is 3-4x
#                                   faster) or address (the default of --replay)
#   scripts/fuzz.sh TARGET...       only these targets
#   scripts/fuzz.sh --replay        CI: build every target, then run the
#                                   committed corpus and fuzz/crashes/<target>/
#                                   once each (-runs=0); fails on any crash
#
# Exploring prints, per target: executions, exec/s, corpus files new after
# minimising, and crashes (saved under fuzz/artifacts/<target>/). Keep a
# crash as fuzz/crashes/<target>/<name> with a unit test for it where the bug
# is (docs/security.md, "Fuzzing"). Seeds come from the test fixtures:
# `cargo run --manifest-path fuzz/Cargo.toml --example seed`.
set -euo pipefail
cd "$(dirname "$0")/.."

runs=1000000
max_time=1800
mode=explore
sanitizer=""
targets=()
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) runs="$2"; shift 2 ;;
        --max-time) max_time="$2"; shift 2 ;;
        --sanitizer) sanitizer="$2"; shift 2 ;;
        --replay) mode=replay; shift ;;
        -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
        -*) echo "usage: scripts/fuzz.sh [--replay] [--runs N] [--max-time S] [--sanitizer S] [TARGET...]" >&2; exit 2 ;;
        *) targets+=("$1"); shift ;;
    esac
done
[ -n "$sanitizer" ] || { [ "$mode" = replay ] && sanitizer=address || sanitizer=none; }

# cargo-fuzz needs the nightly toolchain; a fresh machine gets it here.
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
if [ "$(cargo fuzz --version 2>/dev/null)" != "cargo-fuzz 0.13.2" ]; then
    cargo install cargo-fuzz --version 0.13.2 --locked
fi
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo +nightly fuzz list)

# Release with debug assertions and overflow checks: an overflow is a crash.
flags=(--release --debug-assertions --sanitizer "$sanitizer")
cargo +nightly fuzz build "${flags[@]}"

if [ "$mode" = replay ]; then
    mkdir -p fuzz/artifacts
    for t in "${targets[@]}"; do
        dirs=("fuzz/corpus/$t")
        [ -d "fuzz/crashes/$t" ] && dirs+=("fuzz/crashes/$t")
        log="fuzz/artifacts/$t.replay.log"
        echo "replay $t: $(find "${dirs[@]}" -type f | wc -l) inputs (${dirs[*]})"
        if ! cargo +nightly fuzz run "${flags[@]}" "$t" "${dirs[@]}" -- -runs=0 >"$log" 2>&1; then
            tail -n 40 "$log" >&2
            echo "replay $t: FAILED (log: $log)" >&2
            exit 1
        fi
        grep -E '^#[0-9]+[[:space:]]+DONE' "$log" || true
    done
    echo "replay: every target ran its corpus and crash files without a crash"
    exit 0
fi

hashes() { # the content hashes of the files in a directory
    find "$1" -type f -exec sha1sum {} + 2>/dev/null | cut -d' ' -f1 | sort -u
}

report=()
failed=0
for t in "${targets[@]}"; do
    corpus="fuzz/corpus/$t"
    mkdir -p "$corpus" "fuzz/artifacts/$t"
    before=$(mktemp)
    hashes "$corpus" >"$before"
    crashes_before=$(find "fuzz/artifacts/$t" -type f | wc -l)
    log="fuzz/artifacts/$t.log"
    echo "== $t: $runs runs (at most $max_time s), log in $log"
    status=0
    cargo +nightly fuzz run "${flags[@]}" "$t" "$corpus" -- \
        -runs="$runs" -max_total_time="$max_time" -timeout=30 -print_final_stats=1 \
        >"$log" 2>&1 || status=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    # Keep an input only for an edge no other input reaches (not for a new
    # hit count of one): a third of the files, the same coverage.
    cargo +nightly fuzz cmin "${flags[@]}" "$t" "$corpus" -- -use_counters=0 >>"$log" 2>&1 ||
        echo "$t: cmin failed (see $log)" >&2
    new=$(comm -13 "$before" <(hashes "$corpus") | wc -l)
    files=$(find "$corpus" -type f | wc -l)
    crashes=$(( $(find "fuzz/artifacts/$t" -type f | wc -l) - crashes_before ))
    rm -f "$before"
    if [ "$status" -ne 0 ] || [ "$crashes" -gt 0 ]; then
        failed=$((failed + 1))
        echo "$t: CRASH (exit $status); inputs in fuzz/artifacts/$t/:" >&2
        grep -E "panicked|SUMMARY|Test unit written" "$log" >&2 || true
    fi
    line="$(printf '%-9s executions %9s  exec/s %6s  corpus %5s files (%s new)  crashes %s' \
        "$t" "${execs:-?}" "${rate:-?}" "$files" "$new" "$crashes")"
    echo "$line"
    report+=("$line")
done

echo
echo "fuzz: $(date -u +%Y-%m-%d), $runs runs per target, sanitizer $sanitizer"
printf '%s\n' "${report[@]}"
echo "corpus: $(find fuzz/corpus -type f | wc -l) files," \
    "$(find fuzz/corpus -type f -printf '%s\n' | awk '{s += $1} END {print s}') bytes"
[ "$failed" -eq 0 ]
