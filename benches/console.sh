#!/usr/bin/env bash
# Benchmark: every page of the operator console (`[console]` in `serve`) on a
# ledger of FILES files (default 1 000 000: 1 000 days of 1 000 files across
# three partners) and ENTRIES settlement entries (default 50 000 000: the
# same number for each fed file), 1 in 100 files in quarantine, 100 000
# deliveries; on SQLite and on PostgreSQL. Prints how long each page takes
# (curl's time_total, min / median / max of RUNS runs) and the query plans of
# the lists and the chart (they must read an index, not the table).
# Usage: benches/console.sh [FILES] [ENTRIES]
# Needs: sqlite3, psql, curl, PostgreSQL at $PGURL (default postgres://postgres@127.0.0.1:5432/postgres).
# BACKENDS="sqlite postgres" (default); RUNS (default 20); PROFILE (default release).
# Run it under `flock /work/bench.lock` where several people share the machine.
set -euo pipefail
cd "$(dirname "$0")/.."
files=${1:-1000000}
entries=${2:-50000000}
runs=${RUNS:-20}
dir=${BENCH_DIR:-target/bench/console}
pgurl=${PGURL:-postgres://postgres@127.0.0.1:5432/postgres}
port=${PORT:-18080}
rm -rf "$dir"
mkdir -p "$dir"
profile=${PROFILE:-release}
cargo build --profile "$profile" --quiet --bins
bin=${CARGO_TARGET_DIR:-target}/$([ "$profile" = dev ] && echo debug || echo "$profile")/settlegate
per=$(( entries / files ))
[ "$per" -ge 1 ] || per=1
hash=$(echo bench-password | "$bin" hash-password)
cfg="$dir/settlegate.toml"
sed -e "s|^formats_dir = .*|formats_dir = \"$PWD/formats\"|" \
    -e '/^\[sftp_server\]/,$d' settlegate.toml > "$cfg"
cat >> "$cfg" <<TOML
[[partners.expect]]
format = "pg-settlement-csv"
by = "10:00"

[console]
listen = "127.0.0.1:$port"
[[console.operators]]
login = "bench"
password_hash = "$hash"
role = "operator"
TOML
days=$(( (files + 999) / 1000 ))
# The measured day: the one in the middle (a business day on or before it).
date=$(date -u -d "2020-01-01 + $(( days / 2 )) days" +%F)
while [ "$(date -u -d "$date" +%u)" -gt 5 ]; do date=$(date -u -d "$date - 1 day" +%F); done

# One row per file: partner, verdict and business date from its number;
# checksum, fingerprint and business key unique (as fed files' are).
seed_files() { # $1: expression for "i", $2: date expression, $3: timestamp expression
  cat <<SQL
SELECT CASE $1 % 3 WHEN 0 THEN 'cardco' WHEN 1 THEN 'bankco' ELSE 'pgco' END,
       CASE $1 % 4 WHEN 0 THEN 'sftp-pull' WHEN 1 THEN 'sftp-push' WHEN 2 THEN 'watch' ELSE 'manual' END,
       CASE WHEN $1 % 4 = 0 THEN 'primary' END,
       'F' || $1 || '.dat', $3, 1000 + $1 % 5000, 'c' || $1,
       CASE $1 % 3 WHEN 0 THEN 'card-settlement' WHEN 1 THEN 'bank-transfer-result' ELSE 'pg-settlement-csv' END,
       'f' || $1, 'k' || $1, $2, $per,
       CASE WHEN $1 % 200 = 7 THEN 'drill' WHEN $1 % 200 = 11 THEN 'invalid'
            WHEN $1 % 50 = 0 THEN 'duplicate' ELSE 'fed' END,
       CASE WHEN $1 % 200 = 7 THEN '드릴 파일: run_mode=D' WHEN $1 % 200 = 11 THEN 'control totals disagree' END
SQL
}
cols="partner, channel, endpoint, name, received_at, size, checksum, format, fingerprint, business_key, business_date, records, verdict, reason"

page() { curl -sf -o /dev/null -b "$dir/jar" -w '%{time_total}\n' "http://127.0.0.1:$port$1"; }

timed() { # $1: path. min / median / max of $runs runs in ms.
  local t=()
  for _ in $(seq "$runs"); do
    t+=("$(page "$1" | awk '{printf "%d", $1 * 1000}')")
  done
  printf '%s\n' "${t[@]}" | sort -n | awk -v l="GET $1" '{v[NR]=$1} END{printf "%-40s min %4d  median %4d  max %4d ms (%d runs)\n", l, v[1], v[int((NR+1)/2)], v[NR], NR}'
}

measure() { # $@: ledger args
  "$bin" --config "$cfg" --data-dir "$dir/data" "$@" serve 2>"$dir/serve.log" &
  local pid=$!
  for _ in $(seq 300); do curl -sf -o /dev/null "http://127.0.0.1:$port/login" && break; sleep 0.2; done
  rm -f "$dir/jar"
  local token
  token=$(curl -sf -c "$dir/jar" "http://127.0.0.1:$port/login" | sed -n 's/.*name="csrf" value="\([0-9a-f]*\)".*/\1/p')
  curl -sf -o /dev/null -b "$dir/jar" -c "$dir/jar" --data-urlencode login=bench --data-urlencode password=bench-password \
    --data-urlencode "csrf=$token" "http://127.0.0.1:$port/login"
  local mid=$(( files / 2 ))
  local fed=$(( mid - mid % 200 + 1 ))
  local mid_delivery=$(( ${DELIVERIES:-100000} / 2 ))
  for p in "/day?date=$date" "/quarantine" "/quarantine?before=$mid" "/requests" \
           "/files/$fed" "/files/$(( mid - mid % 200 + 7 ))" "/endpoints" "/endpoints?before=$mid_delivery"; do
    page "$p" >/dev/null || { echo "GET $p failed"; tail -5 "$dir/serve.log"; }
    timed "$p"
  done
  kill -TERM "$pid"; wait "$pid" || true
}

deliveries=${DELIVERIES:-100000}
echo "files: $files over $days days, $per entries per fed file; measured date $date"
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
PRAGMA cache_size = -1000000;
BEGIN;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $files)
INSERT INTO files ($cols)
$(seed_files i "date('2020-01-01', '+' || (i / 1000) || ' days')" "strftime('%Y-%m-%dT%H:%M:%S+00:00', '2020-01-01', '+' || (i / 1000) || ' days', '+' || (i % 1000) || ' seconds')")
FROM n;
UPDATE files SET fed_amount = CAST(1000 * $per + $per * ($per + 1) / 2 AS TEXT), fed_entries = $per WHERE verdict = 'fed';
COMMIT;
BEGIN;
WITH RECURSIVE k(r) AS (SELECT 1 UNION ALL SELECT r + 1 FROM k WHERE r < $per)
INSERT INTO entries (file_id, partner, format, business_date, record_no, record_key, amount, kind, fields)
SELECT f.id, f.partner, f.format, f.business_date, k.r, 'r' || f.id || '.' || k.r, CAST(1000 + k.r AS TEXT), 'original', '{}'
FROM files f, k WHERE f.verdict = 'fed' ORDER BY f.id, k.r;
UPDATE files SET entries_from = s.lo, entries_to = s.hi
FROM (SELECT file_id, MIN(id) AS lo, MAX(id) AS hi FROM entries GROUP BY file_id) s WHERE files.id = s.file_id;
COMMIT;
BEGIN;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $deliveries)
INSERT INTO deliveries (partner, endpoint, name, source, size, checksum, state, attempts, created_at, updated_at, delivered_at)
SELECT CASE i % 3 WHEN 0 THEN 'cardco' WHEN 1 THEN 'bankco' ELSE 'pgco' END, 'primary', 'PAY' || i || '.dat', 'outbox', 2048, 'd' || i,
       'delivered', 1, strftime('%Y-%m-%dT%H:%M:%S+00:00', '2020-01-01', '+' || (i / 100) || ' days'),
       strftime('%Y-%m-%dT%H:%M:%S+00:00', '2020-01-01', '+' || (i / 100) || ' days'), strftime('%Y-%m-%dT%H:%M:%S+00:00', '2020-01-01', '+' || (i / 100) || ' days')
FROM n;
COMMIT;
ANALYZE;
SQL
    echo "sqlite: seeded in $(( $(date +%s) - s )) s ($(du -h "$db" | cut -f1)); $(sqlite3 "$db" 'SELECT COUNT(*) FROM entries') entries"
    echo "sqlite query plans:"
    for q in \
      "SELECT id FROM files WHERE verdict IN ('drill', 'conflict', 'overlap', 'invalid') AND id < 500000 ORDER BY id DESC LIMIT 50" \
      "SELECT id, partner, format, business_date, CAST(fed_amount AS TEXT) FROM files WHERE verdict = 'fed' AND business_date >= date('$date', '-42 days') AND business_date <= '$date'" \
      "SELECT partner, format, file_id, CAST(amount AS TEXT) AS amount FROM entries WHERE business_date = '$date'" \
      "SELECT received_at FROM files WHERE partner = 'cardco' AND endpoint = 'primary' ORDER BY received_at DESC LIMIT 1" \
      "SELECT id FROM deliveries WHERE id < 50000 ORDER BY id DESC LIMIT 50"; do
      echo "  $q"; sqlite3 "$db" "EXPLAIN QUERY PLAN $q" | sed 's/^/    /'
    done
    measure
    rm -rf "$dir/data"
    ;;
  postgres)
    psql -q "$pgurl" -c "DROP DATABASE IF EXISTS settlegate_console_bench WITH (FORCE)" -c "CREATE DATABASE settlegate_console_bench"
    url="${pgurl%/*}/settlegate_console_bench"
    "$bin" --config "$cfg" --data-dir "$dir/data" --ledger "$url" files --partner none >/dev/null
    s=$(date +%s)
    psql -q "$url" <<SQL
SET synchronous_commit = off;
SET maintenance_work_mem = '1GB';
INSERT INTO files ($cols)
$(seed_files i "DATE '2020-01-01' + (i / 1000)" "TIMESTAMPTZ '2020-01-01 00:00:00+00' + (i / 1000) * INTERVAL '1 day' + (i % 1000) * INTERVAL '1 second'")
FROM generate_series(1, $files) AS i;
UPDATE files SET fed_amount = 1000 * $per + $per * ($per + 1) / 2, fed_entries = $per WHERE verdict = 'fed';
INSERT INTO entries (file_id, partner, format, business_date, record_no, record_key, amount, kind, fields)
SELECT f.id, f.partner, f.format, f.business_date, r, 'r' || f.id || '.' || r, 1000 + r, 'original', '{}'
FROM files f, generate_series(1, $per) AS r WHERE f.verdict = 'fed' ORDER BY f.id, r;
UPDATE files SET entries_from = s.lo, entries_to = s.hi
FROM (SELECT file_id, MIN(id) AS lo, MAX(id) AS hi FROM entries GROUP BY file_id) s WHERE files.id = s.file_id;
INSERT INTO deliveries (partner, endpoint, name, source, size, checksum, state, attempts, created_at, updated_at, delivered_at)
SELECT CASE i % 3 WHEN 0 THEN 'cardco' WHEN 1 THEN 'bankco' ELSE 'pgco' END, 'primary', 'PAY' || i || '.dat', 'outbox', 2048, 'd' || i,
       'delivered', 1, TIMESTAMPTZ '2020-01-01 00:00:00+00' + (i / 100) * INTERVAL '1 day',
       TIMESTAMPTZ '2020-01-01 00:00:00+00' + (i / 100) * INTERVAL '1 day', TIMESTAMPTZ '2020-01-01 00:00:00+00' + (i / 100) * INTERVAL '1 day'
FROM generate_series(1, $deliveries) AS i;
VACUUM ANALYZE files;
VACUUM ANALYZE entries;
VACUUM ANALYZE deliveries;
SQL
    echo "postgres: seeded in $(( $(date +%s) - s )) s; $(psql -tA "$url" -c 'SELECT COUNT(*) FROM entries') entries"
    echo "postgres query plans:"
    for q in \
      "SELECT id FROM files WHERE verdict IN ('drill', 'conflict', 'overlap', 'invalid') AND id < 500000 ORDER BY id DESC LIMIT 50" \
      "SELECT id, partner, format, business_date, CAST(fed_amount AS TEXT) FROM files WHERE verdict = 'fed' AND business_date >= DATE '$date' - 42 AND business_date <= DATE '$date'" \
      "SELECT partner, format, file_id, CAST(amount AS TEXT) AS amount FROM entries WHERE business_date = DATE '$date'" \
      "SELECT received_at FROM files WHERE partner = 'cardco' AND endpoint = 'primary' ORDER BY received_at DESC LIMIT 1" \
      "SELECT id FROM deliveries WHERE id < 50000 ORDER BY id DESC LIMIT 50"; do
      echo "  $q"; psql -tA "$url" -c "EXPLAIN $q" | sed 's/^/    /'
    done
    measure --ledger "$url"
    psql -q "$pgurl" -c "DROP DATABASE IF EXISTS settlegate_console_bench WITH (FORCE)"
    ;;
  esac
done
