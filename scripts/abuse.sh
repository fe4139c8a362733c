#!/usr/bin/env bash
# The abuse suite of issue 11: builds ./cmd/maple and the runner into a temp
# dir, then runs every attack (bench/abuse) against a fresh farm each (a
# throwaway redis-server, `maple gateway`, `maple worker`) while a steady
# player runs, and prints one row per attack with PASS/FAIL. Arguments go to
# the runner (scripts/abuse/main.go):
#
#   scripts/abuse.sh                        # every attack
#   scripts/abuse.sh --only pipeline,panics # some
#   scripts/abuse.sh --list                 # their names
#   scripts/abuse.sh --logs ./abuse-out     # keep each farm's logs there
#
# Needs Go and redis-server (--redis-server PATH to pick one). Exits 1 if an
# attack missed a target.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/maple-abuse-bin.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

echo "abuse.sh: building maple at $(cd "$root" && git rev-parse --short HEAD 2>/dev/null || echo '?')$(cd "$root" && git diff --quiet HEAD -- 2>/dev/null || echo ' (with uncommitted changes)')" >&2
(cd "$root" && go build -o "$tmp/maple" ./cmd/maple && go build -o "$tmp/abuse" ./scripts/abuse)
"$tmp/abuse" --maple "$tmp/maple" "$@"
