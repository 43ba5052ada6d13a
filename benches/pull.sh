#!/usr/bin/env bash
# SFTP pickup throughput: `settlegate pull` from a local OpenSSH sshd
# against OpenSSH's own client (`sftp -b`), in the same run, alternating,
# on loopback and across a 20 ms round trip (benches/delay_proxy.py: 10 ms
# each way; used because this kernel has no netem):
#   - one large file of random bytes (`get`);
#   - FILES small card-settlement files (3 records each, `mget`).
#
#   benches/pull.sh [SIZE (default 1GiB)] [RUNS (default 3)] [DELAY_MS one way (default 10)] [FILES (default 200)]
#
# Both sides make the bytes durable: settlegate fsyncs its store; the sftp
# timing includes `sync`. settlegate's time also includes recording and
# judging each file (the large random file is quarantined as invalid at
# record 1; the small files are valid and fed).
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${1:-1GiB}
RUNS=${2:-3}
DELAY=${3:-10}
FILES=${4:-200}
bytes=$(numfmt --from=iec-i "${SIZE%B}")

. benches/lib.sh
mkdir -p "$work/remote" "$work/many"
name=CSTL_031_20261121_0001.dat
echo "generating $SIZE and $FILES small files ..."
head -c "$bytes" /dev/urandom > "$work/remote/$name"
"$BIN_DIR/settlegate-generate" card-settlement --records 3 --files "$FILES" "$work/many" > /dev/null

config() { # port remote-dir
  endpoint_config "$1" primary
  cat <<CFG
remote_dir = "$2"
stable_seconds = 0
after_pickup = "leave"
CFG
}

mbps() { python3 -c "print(f'{$bytes / $1 / 1e6:.0f}')"; }
now() { date +%s.%N; }
sftp_batch() { # port
  sftp -q -b "$work/batch" -P "$1" -i "$work/client_key" \
    -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "$(id -un)@127.0.0.1" >/dev/null
}

for what in large files; do
  for mode in loopback delay; do
    p=$port; [ $mode = delay ] && p=$proxy
    ratios=()
    if [ $what = large ]; then
      config "$p" "$work/remote" > "$work/settlegate.toml"
      echo "get $work/remote/$name $work/got" > "$work/batch"
    else
      config "$p" "$work/many" > "$work/settlegate.toml"
      echo "mget $work/many/* $work/got/" > "$work/batch"
    fi
    for run in $(seq "$RUNS"); do
      rm -rf "$work/data" "$work/got"
      [ $what = files ] && mkdir "$work/got"
      t0=$(now)
      "$bin" --config "$work/settlegate.toml" --data-dir "$work/data" pull --partner bench >/dev/null
      t1=$(now)
      sftp_batch "$p"
      if [ $what = large ]; then sync "$work/got"; else sync "$work/got"/*; fi
      t2=$(now)
      sg=$(python3 -c "print($t1-$t0)"); os=$(python3 -c "print($t2-$t1)")
      r=$(python3 -c "print(f'{$os/$sg:.2f}')"); ratios+=("$r")
      if [ $what = large ]; then
        printf '%-6s %-8s run %s: settlegate %6.2f s (%5s MB/s)   sftp %6.2f s (%5s MB/s)   ratio %s\n' \
          "$what" "$mode" "$run" "$sg" "$(mbps "$sg")" "$os" "$(mbps "$os")" "$r"
      else
        taken=$("$bin" --config "$work/settlegate.toml" --data-dir "$work/data" files --json | grep -o "\"id\"" | wc -l)
        printf '%-6s %-8s run %s: settlegate %6.2f s (%d recorded)   sftp mget %6.2f s (%d files)   ratio %s\n' \
          "$what" "$mode" "$run" "$sg" "$taken" "$os" "$(ls "$work/got" | wc -l)" "$r"
      fi
    done
    printf '%-6s %-8s median ratio %s (runs: %s)\n' "$what" "$mode" "$(median "${ratios[@]}")" "${ratios[*]}"
  done
done
