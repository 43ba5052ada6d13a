#!/usr/bin/env bash
# Benchmark: files per second through the watched-folder channel. Starts
# `settlegate serve` on a fresh data dir, moves N small card-settlement files
# (3 records each, distinct) into cardco's inbox at once, and times until
# every one has its receipt.
# Usage: benches/watch.sh [N] [LEDGER]   (defaults: 10000, sqlite; LEDGER
# postgres uses a fresh database at $PGURL, default
# postgres://postgres@127.0.0.1:5432/postgres)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-10000}
ledger=${2:-sqlite}
pgurl=${PGURL:-postgres://postgres@127.0.0.1:5432/postgres}
dir=${BENCH_DIR:-target/bench/watch}
rm -rf "$dir"; mkdir -p "$dir/drop"
cargo build --release --quiet --bins
target/release/settlegate-generate card-settlement --records 3 --files "$n" "$dir/drop" > /dev/null
# The sample's SFTP server (its last section) is not part of this benchmark.
sed -e "s|^formats_dir = .*|formats_dir = \"$PWD/formats\"|" -e "s|^settle_seconds = .*|settle_seconds = 0.5|" \
  -e '/^\[sftp_server\]/,$d' settlegate.toml > "$dir/settlegate.toml"
args=(--config "$dir/settlegate.toml" --data-dir "$dir/data")
case $ledger in
  sqlite) cleanup() { :; } ;;
  postgres)
    db=settlegate_watch_$$
    psql -q "$pgurl" -c "CREATE DATABASE $db"
    args+=(--ledger "${pgurl%/*}/$db")
    cleanup() { psql -q "$pgurl" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)"; } ;;
  *) echo "unknown ledger $ledger (sqlite or postgres)"; exit 2 ;;
esac
target/release/settlegate "${args[@]}" serve 2> "$dir/serve.log" &
pid=$!
trap 'kill $pid 2>/dev/null || true; cleanup' EXIT
until grep -q "settlegate serving" "$dir/serve.log"; do
  kill -0 $pid 2>/dev/null || { cat "$dir/serve.log"; exit 1; }
  sleep 0.1
done
receipts="$dir/data/receipts/cardco"
t0=$(date +%s.%N)
# Same file system: each file appears in the inbox whole, by rename.
find "$dir/drop" -name '*.dat' -exec mv -t "$dir/data/inbox/cardco/" {} +
until [ "$(find "$receipts" -name '*.verdict' | wc -l)" -ge "$n" ]; do sleep 0.2; done
t1=$(date +%s.%N)
kill -TERM $pid; wait $pid || true
fed=$(target/release/settlegate "${args[@]}" files --verdict fed --json | grep -o '"id"' | wc -l)
awk -v n="$n" -v a="$t0" -v b="$t1" -v fed="$fed" -v l="$ledger" 'BEGIN{printf "%s: %d files (%d fed) in %.1f s: %.0f files/s (includes the 0.5 s settle time)\n", l, n, fed, b-a, n/(b-a)}'
