#!/usr/bin/env bash
# SFTP pickup throughput: `settlegate pull` of one file from a local OpenSSH
# sshd against OpenSSH's own client (`sftp -b`, get), in the same run, on
# loopback and across a 20 ms round trip (benches/delay_proxy.py: 10 ms each
# way; used because this kernel has no netem).
#
#   benches/pull.sh [SIZE (default 1GiB)] [RUNS (default 3)] [DELAY_MS one way (default 10)]
#
# Both sides make the bytes durable: settlegate fsyncs its store; the sftp
# timing includes `sync FILE`. settlegate's time also includes recording and
# judging the file (random bytes: quarantined as invalid at record 1).
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${1:-1GiB}
RUNS=${2:-3}
DELAY=${3:-10}
bytes=$(numfmt --from=iec-i "${SIZE%B}")

. benches/lib.sh
mkdir -p "$work/remote"
name=CSTL_031_20261121_0001.dat
echo "generating $SIZE ..."
head -c "$bytes" /dev/urandom > "$work/remote/$name"

config() { # port
  endpoint_config "$1" primary
  cat <<CFG
remote_dir = "$work/remote"
stable_seconds = 0
after_pickup = "leave"
CFG
}

mbps() { python3 -c "print(f'{$bytes / $1 / 1e6:.0f}')"; }
now() { date +%s.%N; }

for mode in loopback delay; do
  p=$port; [ $mode = delay ] && p=$proxy
  config "$p" > "$work/settlegate.toml"
  for run in $(seq "$RUNS"); do
    rm -rf "$work/data" "$work/got"
    t0=$(now)
    "$bin" --config "$work/settlegate.toml" --data-dir "$work/data" pull --partner bench >/dev/null
    t1=$(now)
    echo "get $work/remote/$name $work/got" > "$work/batch"
    sftp -q -b "$work/batch" -P "$p" -i "$work/client_key" \
      -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "$(id -un)@127.0.0.1" >/dev/null
    sync "$work/got"
    t2=$(now)
    sg=$(python3 -c "print($t1-$t0)"); os=$(python3 -c "print($t2-$t1)")
    printf '%-8s run %s: settlegate %6.2f s (%5s MB/s)   sftp %6.2f s (%5s MB/s)   ratio %.2f\n' \
      "$mode" "$run" "$sg" "$(mbps "$sg")" "$os" "$(mbps "$os")" "$(python3 -c "print($os/$sg)")"
  done
done
