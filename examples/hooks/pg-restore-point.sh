#!/usr/bin/env bash
# A `rollout serve --hooks` command: creates a PostgreSQL restore point named
# after the hook run, so the database can be recovered (into a copy) to the
# moment a version was committed or a plan started. docs/data.md has the
# whole recipe.
#
# Connection: the standard libpq variables (PGHOST, PGPORT, PGUSER,
# PGDATABASE; a password through PGPASSFILE, never in the hooks file). The
# role needs EXECUTE on pg_create_restore_point(text) (superusers have it).
# PSQL names the psql to run (default: psql on PATH).
#
# Name: rollout-<event>-v<version>[-plan<plan>]-run<run>, from ROLLOUT_EVENT
# (dots as dashes), ROLLOUT_VERSION, ROLLOUT_PLAN and ROLLOUT_RUN: only
# a-z 0-9 and -, at most 63 bytes (PostgreSQL's limit). The run id is unique,
# so the name is; a name that would be longer keeps its -run<run> end.
#
# Prints one line, `restore_point=<name> lsn=<lsn>`, which the control
# service stores as the run's output; errors go to stderr, exit non-zero.
set -euo pipefail

die() {
    echo "pg-restore-point: $*" >&2
    exit 2
}

number() { # name, value: a decimal id, or die
    [[ "$2" =~ ^[0-9]+$ ]] || die "$1 must be a decimal number, got '$2'"
}

event="${ROLLOUT_EVENT:-}"
version="${ROLLOUT_VERSION:-}"
plan="${ROLLOUT_PLAN:-}"
run="${ROLLOUT_RUN:-}"

[ -n "$event" ] || die "ROLLOUT_EVENT is not set (run this from rollout serve --hooks)"
number ROLLOUT_RUN "$run"
number ROLLOUT_VERSION "$version"
[ -z "$plan" ] || number ROLLOUT_PLAN "$plan"

# plan.start -> plan-start; anything outside a-z 0-9 - becomes -.
event="$(printf '%s' "$event" | tr 'A-Z' 'a-z' | tr -c 'a-z0-9-' '-')"
head="rollout-${event}-v${version}"
[ -z "$plan" ] || head="${head}-plan${plan}"
tail="-run${run}"
max=63
if [ $((${#head} + ${#tail})) -gt "$max" ]; then
    head="${head:0:$((max - ${#tail}))}"
fi
name="${head}${tail}"

# The name is [a-z0-9-] only, so it is safe inside the quotes.
lsn="$("${PSQL:-psql}" -X -v ON_ERROR_STOP=1 -At \
    -c "SELECT pg_create_restore_point('${name}')")" ||
    die "psql failed: no restore point ${name}"
[ -n "$lsn" ] || die "psql printed no LSN for ${name}"

echo "restore_point=${name} lsn=${lsn}"
