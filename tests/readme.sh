#!/usr/bin/env bash
# README's "Fresh machine" commands, run exactly as written, the way a new
# user runs them: from a copy of this tree (so ./data is a fresh, temporary
# data directory), with the sample configuration. Fails when a command does
# not end as README says:
#   block 1, the manual ingest: exit 0 (fed), then run again: exit 10
#     (duplicate, naming the first file);
#   block 2, the service: `serve` starts, the copied file's receipt appears
#     where README says, with verdict=fed, and `files` lists it (exit 0).
# tests/run.sh runs this after the test suite.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
readme="$repo/README.md"
tmp=$(mktemp -d)
serve_pid=
cleanup() {
  if [ -n "$serve_pid" ]; then kill "$serve_pid" 2>/dev/null || true; wait "$serve_pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

fail() { echo "tests/readme.sh: $*" >&2; exit 1; }

# The fenced sh blocks of the "## Fresh machine" section, one file each.
awk -v out="$tmp/block" '
  /^## / { in_section = ($0 ~ /^## Fresh machine/) ; next }
  in_section && /^```sh$/ { n++; inside = 1; next }
  in_section && inside && /^```$/ { inside = 0; next }
  in_section && inside { print > (out n) }
' "$readme"
[ -s "$tmp/block1" ] && [ -s "$tmp/block2" ] || fail "README has no 'Fresh machine' section with two sh blocks"

# A copy of the tree as a fresh clone has it (tracked and new files, nothing
# ignored: no ./data, no target/); the build output is shared.
tree="$tmp/tree"
mkdir -p "$tree"
(cd "$repo" && git ls-files -z -co --exclude-standard | xargs -0 tar -cf - ) | tar -xf - -C "$tree"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target}"
cd "$tree"

run() { # the command as written; prints its output; returns its exit code
  echo "\$ $1"
  set +e
  bash -c "$1" > "$tmp/out" 2>&1
  local code=$?
  set -e
  cat "$tmp/out"
  return $code
}

mapfile -t block1 < "$tmp/block1"
[ ${#block1[@]} -eq 1 ] || fail "block 1 should be one command, found ${#block1[@]} lines"
code=0; run "${block1[0]}" || code=$?
[ "$code" -eq 0 ] || fail "first run of block 1 exited $code, README says 0 (fed)"
grep -q '^fed:' "$tmp/out" || fail "first run of block 1 did not say fed"
code=0; run "${block1[0]}" || code=$?
[ "$code" -eq 10 ] || fail "second run of block 1 exited $code, README says 10 (duplicate)"
grep -q '^duplicate: .*file 1 ' "$tmp/out" || fail "the second run did not name the first file"

mapfile -t block2 < "$tmp/block2"
[ ${#block2[@]} -eq 3 ] || fail "block 2 should be serve, cp, files; found ${#block2[@]} lines"
echo "\$ ${block2[0]} &"
bash -c "${block2[0]}" > "$tmp/serve.log" 2>&1 &
serve_pid=$!
for _ in $(seq 600); do
  grep -q 'settlegate serving' "$tmp/serve.log" && break
  kill -0 "$serve_pid" 2>/dev/null || { cat "$tmp/serve.log"; fail "serve exited before serving"; }
  sleep 0.5
done
grep -q 'settlegate serving' "$tmp/serve.log" || { cat "$tmp/serve.log"; fail "serve did not start"; }
grep -q $'\e\[' "$tmp/serve.log" && fail "serve wrote colour escapes into a log that is not a terminal"
run "${block2[1]}" || fail "block 2's copy failed"
# The receipt README names in its comment on the last line.
receipt=$(grep -o 'data/receipts/[^ ]*\.verdict' <<< "${block2[2]}") || fail "block 2 names no receipt"
for _ in $(seq 120); do [ -f "$receipt" ] && break; sleep 0.5; done
[ -f "$receipt" ] || { cat "$tmp/serve.log"; fail "no receipt at $receipt"; }
grep -q '^verdict=fed$' "$receipt" || { cat "$receipt"; fail "the receipt does not say fed"; }
code=0; run "${block2[2]}" || code=$?
[ "$code" -eq 0 ] || fail "files exited $code"
grep -q 'TRR_088_20261121_01.dat' "$tmp/out" || fail "files does not list the copied file"
kill -TERM "$serve_pid"
wait "$serve_pid" || fail "serve did not exit 0 on SIGTERM"
serve_pid=
echo "tests/readme.sh: README's fresh-machine commands work as written"
