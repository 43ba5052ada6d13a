#!/usr/bin/env bash
# Benchmark: `settlegate ingest` of a 1 GiB card-settlement file (about 5.3 M
# records) into SQLite and into PostgreSQL, against loading the same entry
# rows (same columns, same unique index on the record key, same durability)
# with `sqlite3 .import` and `psql \copy`, in the same run.
# Usage: benches/ingest.sh [SIZE]         (default 1GiB)
# Needs: sqlite3, psql, PostgreSQL at $PGURL (default postgres://postgres@127.0.0.1:5432/postgres).
# BACKENDS="sqlite postgres" (default) selects which halves run; BIN_DIR=dir
# runs the binaries in dir instead of a fresh release build (another build, compared).
set -euo pipefail
cd "$(dirname "$0")/.."
size=${1:-1GiB}
dir=${BENCH_DIR:-target/bench/ingest}
pgurl=${PGURL:-postgres://postgres@127.0.0.1:5432/postgres}
mkdir -p "$dir"
if [ -z "${BIN_DIR:-}" ]; then
  cargo build --release --quiet --bins
  BIN_DIR=${CARGO_TARGET_DIR:-$PWD/target}/release
fi
data="$dir/src/CSTL_031_20261121_0001.dat"
csv="$dir/entries.csv"
mkdir -p "$dir/src"
if [ ! -s "$data" ] || [ "$(cat "$dir/.size" 2>/dev/null)" != "$size" ]; then
  "$BIN_DIR/settlegate-generate" card-settlement --size "$size" --entries-csv "$csv" "$data"
  echo "$size" > "$dir/.size"
fi
records=$(wc -l < "$csv")
now() { date +%s.%N; }
# Each timed step starts with nothing of the step before left to write back.
start() { sync; now; }
rate() { awk -v n="$records" -v t="$1" 'BEGIN{printf "%.0f", n/t}'; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", b-a}'; }
cfg="$dir/settlegate.toml"
sed "s|^formats_dir = .*|formats_dir = \"$PWD/formats\"|" settlegate.toml > "$cfg"
table="CREATE TABLE entries (id INTEGER PRIMARY KEY, file_id BIGINT NOT NULL, partner TEXT NOT NULL, format TEXT NOT NULL,
  business_date TEXT NOT NULL, record_no BIGINT NOT NULL, record_key TEXT NOT NULL, amount TEXT NOT NULL, kind TEXT NOT NULL,
  fields TEXT NOT NULL);
CREATE UNIQUE INDEX entries_key ON entries (partner, format, record_key);
CREATE INDEX entries_date ON entries (business_date);"
# The loaders get the constant columns in the CSV too, so every tool writes identical rows.
full="$dir/entries-full.csv"
[ -s "$full" ] || awk -F, 'BEGIN{OFS=","} {print "1","cardco","card-settlement","2026-11-21",$0}' "$csv" \
  | sed 's/^\(1,cardco,card-settlement,2026-11-21,[0-9]*,[^,]*,[^,]*\),/\1,original,/' > "$full"

echo "records: $records"
backends=${BACKENDS:-sqlite postgres}
if [[ " $backends " == *" sqlite "* ]]; then
# --- SQLite ---------------------------------------------------------------
rm -rf "$dir/sg-sqlite"; t0=$(start)
"$BIN_DIR/settlegate" --config "$cfg" --data-dir "$dir/sg-sqlite" ingest --partner cardco "$data" > /dev/null
t1=$(now); sg_sqlite=$(secs "$t0" "$t1")
rm -f "$dir/import.db"*
# Same columns as settlegate's entries; the implicit rowid is its id.
sqlite3 "$dir/import.db" "PRAGMA journal_mode=WAL;" > /dev/null
sqlite3 "$dir/import.db" "${table/id INTEGER PRIMARY KEY, /}"
t0=$(start)
sqlite3 "$dir/import.db" <<SQL
PRAGMA synchronous=FULL;
.import --csv "$full" entries
SQL
t1=$(now); imp=$(secs "$t0" "$t1")
echo "sqlite:   settlegate ingest ${sg_sqlite} s ($(rate "$sg_sqlite") rec/s)   sqlite3 .import ${imp} s ($(rate "$imp") rec/s)   ratio $(awk -v a="$imp" -v b="$sg_sqlite" 'BEGIN{printf "%.2f", a/b}')x"
fi
if [[ " $backends " == *" postgres "* ]]; then
# --- PostgreSQL -----------------------------------------------------------
db=settlegate_bench_$$
psql -q "$pgurl" -c "CREATE DATABASE $db" ; url="${pgurl%/*}/$db"
rm -rf "$dir/sg-pg"; t0=$(start)
"$BIN_DIR/settlegate" --config "$cfg" --data-dir "$dir/sg-pg" --ledger "$url" ingest --partner cardco "$data" > /dev/null
t1=$(now); sg_pg=$(secs "$t0" "$t1")
psql -q "$pgurl" -c "DROP DATABASE $db WITH (FORCE)"; psql -q "$pgurl" -c "CREATE DATABASE $db"
psql -q "$url" -c "${table/id INTEGER PRIMARY KEY/id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY}"
psql -q "$url" -c "ALTER TABLE entries ALTER COLUMN amount TYPE NUMERIC USING amount::numeric"
t0=$(start)
psql -q "$url" -c "\\copy entries (file_id, partner, format, business_date, record_no, record_key, amount, kind, fields) FROM '$full' CSV"
t1=$(now); cp=$(secs "$t0" "$t1")
psql -q "$pgurl" -c "DROP DATABASE $db WITH (FORCE)"
echo "postgres: settlegate ingest ${sg_pg} s ($(rate "$sg_pg") rec/s)   psql \\copy ${cp} s ($(rate "$cp") rec/s)   ratio $(awk -v a="$cp" -v b="$sg_pg" 'BEGIN{printf "%.2f", a/b}')x"
fi
