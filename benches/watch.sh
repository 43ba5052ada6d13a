#!/usr/bin/env bash
# Benchmark: files per second through the watched-folder channel. Starts
# `settlegate serve` on a fresh data dir, moves N small card-settlement files
# (3 records each, distinct) into cardco's inbox at once, and times until
# every one has its receipt; RUNS times, each on a fresh data dir (and
# database), printing each run and the median.
# Usage: benches/watch.sh [N] [LEDGER] [RUNS]   (defaults: 10000, sqlite, 1;
# LEDGER postgres uses a fresh database at $PGURL, default
# postgres://postgres@127.0.0.1:5432/postgres)
#        BIN_DIR=dir benches/watch.sh …   (the binaries in dir instead: another build, compared)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-10000}
ledger=${2:-sqlite}
runs=${3:-1}
pgurl=${PGURL:-postgres://postgres@127.0.0.1:5432/postgres}
dir=${BENCH_DIR:-target/bench/watch}
if [ -z "${BIN_DIR:-}" ]; then
  cargo build --release --quiet --bins
  BIN_DIR=$PWD/target/release
fi
case $ledger in sqlite|postgres) ;; *) echo "unknown ledger $ledger (sqlite or postgres)"; exit 2 ;; esac
pid=
db=
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  [ -n "$db" ] && psql -q "$pgurl" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" || true
}
trap cleanup EXIT
rates=()
for run in $(seq "$runs"); do
  rm -rf "$dir"; mkdir -p "$dir/drop"
  "$BIN_DIR/settlegate-generate" card-settlement --records 3 --files "$n" "$dir/drop" > /dev/null
  # The sample's SFTP server (its last section) is not part of this benchmark.
  sed -e "s|^formats_dir = .*|formats_dir = \"$PWD/formats\"|" -e "s|^settle_seconds = .*|settle_seconds = 0.5|" \
    -e '/^\[sftp_server\]/,$d' settlegate.toml > "$dir/settlegate.toml"
  args=(--config "$dir/settlegate.toml" --data-dir "$dir/data")
  if [ "$ledger" = postgres ]; then
    db=settlegate_watch_$$_$run
    psql -q "$pgurl" -c "CREATE DATABASE $db"
    args+=(--ledger "${pgurl%/*}/$db")
  fi
  "$BIN_DIR/settlegate" "${args[@]}" serve 2> "$dir/serve.log" &
  pid=$!
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
  pid=
  fed=$("$BIN_DIR/settlegate" "${args[@]}" files --verdict fed --json | grep -o '"id"' | wc -l)
  rate=$(awk -v n="$n" -v a="$t0" -v b="$t1" 'BEGIN{printf "%.0f", n/(b-a)}')
  rates+=("$rate")
  awk -v n="$n" -v a="$t0" -v b="$t1" -v fed="$fed" -v l="$ledger" -v r="$run" 'BEGIN{printf "run %d, %s: %d files (%d fed) in %.1f s: %.0f files/s (includes the 0.5 s settle time)\n", r, l, n, fed, b-a, n/(b-a)}'
  if [ -n "$db" ]; then psql -q "$pgurl" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)"; db=; fi
done
printf '%s\n' "${rates[@]}" | sort -n | awk -v l="$ledger" '{a[NR]=$1} END {printf "%s: median %s files/s (runs from %s to %s)\n", l, a[int((NR+1)/2)], a[1], a[NR]}'
