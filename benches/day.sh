#!/usr/bin/env bash
# Benchmark: `settlegate report --date D` and a scrape of `/metrics` on a
# ledger of one million files (1 000 days of 1 000 files across three
# partners and four channels; one settlement entry per fed file; a few
# files in quarantine), on SQLite and on PostgreSQL.
# Usage: benches/day.sh [FILES]           (default 1000000)
# Needs: sqlite3, psql, curl, PostgreSQL at $PGURL (default postgres://postgres@127.0.0.1:5432/postgres).
# BACKENDS="sqlite postgres" (default) selects which halves run; RUNS (default 20) timed runs each;
# PROFILE (default release) the cargo profile measured.
set -euo pipefail
cd "$(dirname "$0")/.."
files=${1:-1000000}
runs=${RUNS:-20}
dir=${BENCH_DIR:-target/bench/day}
pgurl=${PGURL:-postgres://postgres@127.0.0.1:5432/postgres}
rm -rf "$dir"
mkdir -p "$dir"
# PROFILE=dev measures the test build (dependencies optimised, opt-level 2).
profile=${PROFILE:-release}
cargo build --profile "$profile" --quiet --bins
bin=${CARGO_TARGET_DIR:-target}/$([ "$profile" = dev ] && echo debug || echo "$profile")/settlegate
cfg="$dir/settlegate.toml"
# The sample configuration with expectations and the metrics listener.
sed -e "s|^formats_dir = .*|formats_dir = \"$PWD/formats\"|" \
    -e '/^\[sftp_server\]/,$d' settlegate.toml > "$cfg"
cat >> "$cfg" <<'TOML'
[[partners.expect]]
format = "pg-settlement-csv"
by = "10:00"

[metrics]
listen = "127.0.0.1:19464"
TOML
# The measured day: the 500th of the 1 000 days.
days=$(( (files + 999) / 1000 ))
date=$(date -u -d "2020-01-01 + $(( days / 2 )) days" +%F)

# One row per file: partner, channel, verdict and business date from its
# number; checksum, fingerprint and business key unique (as fed files' are).
seed_select() { # $1: expression for "i", $2: date expression, $3: timestamp expression
  cat <<SQL
SELECT CASE $1 % 3 WHEN 0 THEN 'cardco' WHEN 1 THEN 'bankco' ELSE 'pgco' END,
       CASE $1 % 4 WHEN 0 THEN 'sftp-pull' WHEN 1 THEN 'sftp-push' WHEN 2 THEN 'watch' ELSE 'manual' END,
       'F' || $1 || '.dat', $3, 1000 + $1 % 5000, 'c' || $1, 
       CASE $1 % 3 WHEN 0 THEN 'card-settlement' WHEN 1 THEN 'bank-transfer-result' ELSE 'pg-settlement-csv' END,
       'f' || $1, 'k' || $1, $2, 10,
       CASE WHEN $1 % 100000 = 7 THEN 'drill' WHEN $1 % 100000 = 11 THEN 'invalid'
            WHEN $1 % 50 = 0 THEN 'duplicate' ELSE 'fed' END
SQL
}
cols="partner, channel, name, received_at, size, checksum, format, fingerprint, business_key, business_date, records, verdict"

timed() { # $1: label; the rest: a command. Prints min / median / max of $runs runs in ms.
  local label=$1; shift
  local t=()
  for _ in $(seq "$runs"); do
    local a b
    a=$(date +%s%N); "$@" >/dev/null || [ $? -eq 5 ]; b=$(date +%s%N)
    t+=($(( (b - a) / 1000000 )))
  done
  printf '%s\n' "${t[@]}" | sort -n | awk -v l="$label" '{v[NR]=$1} END{printf "%-34s min %4d  median %4d  max %4d ms (%d runs)\n", l, v[1], v[int((NR+1)/2)], v[NR], NR}'
}

scrape() { curl -sf -o /dev/null "http://127.0.0.1:19464/metrics"; }

measure() { # $@: ledger args
  timed "report --date $date" "$bin" --config "$cfg" --data-dir "$dir/data" "$@" report --date "$date" --json
  "$bin" --config "$cfg" --data-dir "$dir/data" "$@" serve 2>"$dir/serve.log" &
  local pid=$!
  for _ in $(seq 100); do curl -sf -o /dev/null http://127.0.0.1:19464/healthz && break; sleep 0.2; done
  scrape
  timed "GET /metrics (curl)" scrape
  kill -TERM "$pid"; wait "$pid" || true
}

echo "files: $files over $days business dates; measured date $date"
echo "machine: $(nproc) cores, $(awk '/MemTotal/{printf "%.1f GiB", $2/1048576}' /proc/meminfo), $(uname -r)"
for backend in ${BACKENDS:-sqlite postgres}; do
  case $backend in
  sqlite)
    "$bin" --config "$cfg" --data-dir "$dir/data" files --partner none >/dev/null
    db="$dir/data/ledger.db"
    s=$(date +%s)
    sqlite3 "$db" <<SQL
PRAGMA journal_mode = WAL;
PRAGMA synchronous = OFF;
BEGIN;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $files)
INSERT INTO files ($cols)
$(seed_select i "date('2020-01-01', '+' || (i / 1000) || ' days')" "strftime('%Y-%m-%dT%H:%M:%S+00:00', '2020-01-01', '+' || (i / 1000) || ' days', '+' || (i % 1000) || ' seconds')")
FROM n;
INSERT INTO entries (file_id, partner, format, business_date, record_no, record_key, amount, kind, fields)
SELECT id, partner, format, business_date, 1, 'r' || id, '1000.50', 'original', '{}' FROM files WHERE verdict = 'fed';
COMMIT;
ANALYZE;
SQL
    echo "sqlite: seeded in $(( $(date +%s) - s )) s ($(du -h "$db" | cut -f1))"
    measure
    ;;
  postgres)
    psql -q "$pgurl" -c "DROP DATABASE IF EXISTS settlegate_bench WITH (FORCE)" -c "CREATE DATABASE settlegate_bench"
    url="${pgurl%/*}/settlegate_bench"
    "$bin" --config "$cfg" --data-dir "$dir/data-pg" --ledger "$url" files --partner none >/dev/null
    s=$(date +%s)
    psql -q "$url" <<SQL
SET synchronous_commit = off;
INSERT INTO files ($cols)
$(seed_select i "DATE '2020-01-01' + (i / 1000)" "TIMESTAMPTZ '2020-01-01 00:00:00+00' + (i / 1000) * INTERVAL '1 day' + (i % 1000) * INTERVAL '1 second'")
FROM generate_series(1, $files) AS i;
INSERT INTO entries (file_id, partner, format, business_date, record_no, record_key, amount, kind, fields)
SELECT id, partner, format, business_date, 1, 'r' || id, 1000.50, 'original', '{}' FROM files WHERE verdict = 'fed';
VACUUM ANALYZE files;
VACUUM ANALYZE entries;
SQL
    echo "postgres: seeded in $(( $(date +%s) - s )) s"
    measure --ledger "$url"
    psql -q "$pgurl" -c "DROP DATABASE IF EXISTS settlegate_bench WITH (FORCE)"
    ;;
  esac
done
