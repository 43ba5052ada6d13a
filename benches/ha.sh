#!/usr/bin/env bash
# Benchmark: several nodes on one PostgreSQL ledger (store = "postgres").
#
# 1. Files judged per second on the push channel with one, two and three
#    `serve` nodes: FILES small card-settlement files (3 records each) put by
#    one OpenSSH `sftp` client per node at once, timed from the first put
#    to the last verdict in the ledger.
# 2. The content store in PostgreSQL against the local directory for one
#    large card-settlement file: `settlegate ingest` of a file whose trailer
#    is wrong, so the run is staging (store) + one full verification pass +
#    the verdict `invalid`, and no feed.
#
# Usage: benches/ha.sh [FILES] [RUNS] [SIZE]     (defaults 300 3 1GiB)
#        PARTS="push store" selects the halves.
# Needs: psql, sftp, ssh-keygen; PostgreSQL at $PGURL (default
# postgres://postgres@127.0.0.1:5432/postgres). Run it alone:
#        flock /work/bench.lock benches/ha.sh
set -euo pipefail
cd "$(dirname "$0")/.."
files=${1:-300}
runs=${2:-3}
size=${3:-1GiB}
parts=${PARTS:-push store}
pgurl=${PGURL:-postgres://postgres@127.0.0.1:5432/postgres}
dir=${BENCH_DIR:-target/bench/ha}
rm -rf "$dir/run"; mkdir -p "$dir/run"
dir=$(cd "$dir" && pwd)
cargo build --release --quiet --bins
tdir=$(cd "${CARGO_TARGET_DIR:-target}" && pwd)
bin=$tdir/release/settlegate
gen=$tdir/release/settlegate-generate
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT
now() { date +%s.%N; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
db_url() { echo "${pgurl%/*}/$1"; }
fresh_db() { # name
  psql -q "$pgurl" -c "DROP DATABASE IF EXISTS $1 WITH (FORCE)" -c "CREATE DATABASE $1" >/dev/null
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
spread() { sort -n | awk '{a[NR]=$1} END {printf "%s / %s / %s", a[1], a[int((NR+1)/2)], a[NR]}'; }

ssh-keygen -q -t ed25519 -N '' -f "$dir/run/client"
ssh-keygen -q -t ed25519 -N '' -f "$dir/run/host_key"
opts=(-i "$dir/run/client" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null
      -o IdentitiesOnly=yes -o BatchMode=yes -o LogLevel=ERROR)

node_config() { # port store
  cat <<CFG
store = "$2"
lease_seconds = 10
formats_dir = "$PWD/formats"
[[partners]]
id = "cardco"
formats = ["card-settlement"]
[sftp_server]
listen = "127.0.0.1:$1"
host_key = "$dir/run/host_key"
verdict_wait_seconds = 0
[[sftp_server.accounts]]
partner = "cardco"
authorized_keys = ["$(cat "$dir/run/client.pub")"]
CFG
}

if [[ " $parts " == *" push "* ]]; then
  # Small files, distinct: each one is fed.
  "$gen" card-settlement --files "$files" --records 3 "$dir/run/files" >/dev/null
  echo "push: $files files of $(stat -c %s "$(ls "$dir"/run/files/* | head -1)") bytes"
  for nodes in 1 2 3; do
    rates=()
    for r in $(seq "$runs"); do
      db=sg_bench_ha_push; fresh_db $db
      ports=()
      for n in $(seq "$nodes"); do
        p=$(free_port); ports+=("$p")
        mkdir -p "$dir/run/n$n"
        node_config "$p" postgres > "$dir/run/n$n/settlegate.toml"
        "$bin" --config "$dir/run/n$n/settlegate.toml" --data-dir "$dir/run/n$n/data" \
          --ledger "$(db_url $db)" serve 2> "$dir/run/n$n/serve.log" & pids+=($!)
      done
      for n in $(seq "$nodes"); do
        until grep -q "settlegate serving" "$dir/run/n$n/serve.log"; do sleep 0.1; done
      done
      # One batch per node, the files dealt round-robin.
      i=0
      for n in $(seq "$nodes"); do echo "cd inbox" > "$dir/run/batch$n"; done
      for f in "$dir"/run/files/*; do
        echo "put $f" >> "$dir/run/batch$(( i % nodes + 1 ))"; i=$((i + 1))
      done
      t0=$(now)
      cpids=()
      for n in $(seq "$nodes"); do
        sftp -q -b "$dir/run/batch$n" -P "${ports[$((n - 1))]}" "${opts[@]}" "cardco@127.0.0.1" >/dev/null & cpids+=($!)
      done
      wait "${cpids[@]}"
      until [ "$(psql -tA "$(db_url $db)" -c "SELECT count(*) FROM files WHERE verdict <> 'received'")" -ge "$files" ]; do
        sleep 0.05
      done
      t1=$(now)
      rate=$(awk -v n="$files" -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", n/(b-a)}')
      rates+=("$rate")
      echo "  $nodes node(s), run $r: $rate files/s"
      kill "${pids[@]}" 2>/dev/null || true; wait "${pids[@]}" 2>/dev/null || true; pids=()
      rm -rf "$dir"/run/n*
    done
    echo "push, $nodes node(s): files judged per second min / median / max: $(printf '%s\n' "${rates[@]}" | spread)"
  done
  psql -q "$pgurl" -c "DROP DATABASE IF EXISTS sg_bench_ha_push WITH (FORCE)" >/dev/null
fi

if [[ " $parts " == *" store "* ]]; then
  big="$dir/CSTL_031_20261121_0001.dat"
  if [ ! -s "$big" ] || [ "$(cat "$dir/.size" 2>/dev/null)" != "$size" ]; then
    "$gen" card-settlement --size "$size" "$big"
    # Spoil the trailer's record count: verified to the end, judged invalid, never fed.
    # (the last digit of record_count: the trailer is the last 202 bytes).
    pos=$(( $(stat -c %s "$big") - 202 + 7 ))
    d=$(dd if="$big" bs=1 skip="$pos" count=1 status=none)
    printf '%s' $(( (d + 1) % 10 )) | dd of="$big" bs=1 seek="$pos" conv=notrunc status=none
    echo "$size" > "$dir/.size"
  fi
  cat "$big" > /dev/null
  echo "store: $(stat -c %s "$big") bytes"
  loc=(); pgs=()
  for r in $(seq "$runs"); do
    for store in local postgres; do
      db=sg_bench_ha_store; fresh_db $db
      rm -rf "$dir/run/s"; mkdir -p "$dir/run/s"
      if [ "$store" = local ]; then s_cfg='"'"$dir/run/s/blobs"'"'; else s_cfg='"postgres"'; fi
      sed -e "s|^store = .*|store = $s_cfg|" <(node_config 1 x | sed '/^\[sftp_server\]/,$d') > "$dir/run/s/settlegate.toml"
      t0=$(now)
      code=0
      "$bin" --config "$dir/run/s/settlegate.toml" --data-dir "$dir/run/s/data" --ledger "$(db_url $db)" \
        ingest --partner cardco "$big" > "$dir/run/s/out.json" || code=$?
      t1=$(now)
      [ "$code" = 14 ] || { echo "expected verdict invalid (14), got $code"; cat "$dir/run/s/out.json"; exit 1; }
      t=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", b-a}')
      if [ "$store" = local ]; then loc+=("$t"); else pgs+=("$t"); fi
      echo "  run $r, $store store: $t s"
    done
  done
  a=$(printf '%s\n' "${loc[@]}" | median); b=$(printf '%s\n' "${pgs[@]}" | median)
  echo "store, ingest (stage + verify) of $size: local $(printf '%s\n' "${loc[@]}" | spread) s, postgres $(printf '%s\n' "${pgs[@]}" | spread) s (min / median / max); ratio of medians $(awk -v a="$a" -v b="$b" 'BEGIN{printf "%.2f", b/a}')x"
  psql -q "$pgurl" -c "DROP DATABASE IF EXISTS sg_bench_ha_store WITH (FORCE)" >/dev/null
fi
