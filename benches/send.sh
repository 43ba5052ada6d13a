#!/usr/bin/env bash
# SFTP delivery throughput: `settlegate send` of one file to a local OpenSSH
# sshd against OpenSSH's own client (`sftp -b`, put), alternating in the same
# run, on loopback and across a 20 ms round trip (benches/delay_proxy.py: 10
# ms each way; used because this kernel has no netem).
#
#   benches/send.sh [SIZE (default 1GiB)] [RUNS (default 3)] [DELAY_MS one way (default 10)]
#
# settlegate's time is the whole `send`: staging the file in its content
# store (copy + fsync), recording the delivery, connecting, the upload under
# a temporary name, the size check and the rename. `sftp put` only copies.
# Each run sends other bytes (the first 8 are the run's number: the same
# bytes twice would be refused as a duplicate).
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${1:-1GiB}
RUNS=${2:-3}
DELAY=${3:-10}
bytes=$(numfmt --from=iec-i "${SIZE%B}")

. benches/lib.sh
mkdir -p "$work/remote" "$work/local"
name=PAYOUT_20261121.dat
echo "generating $SIZE ..."
head -c "$bytes" /dev/urandom > "$work/local/$name"

config() { # port
  endpoint_config "$1" bank
  cat <<CFG
upload_dir = "$work/remote"
CFG
}

mbps() { python3 -c "print(f'{$bytes / $1 / 1e6:.0f}')"; }
now() { date +%s.%N; }

n=0
for mode in loopback delay; do
  p=$port; [ $mode = delay ] && p=$proxy
  config "$p" > "$work/settlegate.toml"
  for run in $(seq "$RUNS"); do
    n=$((n + 1))
    printf '%08d' "$n" | dd of="$work/local/$name" bs=8 count=1 conv=notrunc status=none
    rm -rf "$work/remote/$name" "$work/remote/sftp-$name"
    t0=$(now)
    "$bin" --config "$work/settlegate.toml" --data-dir "$work/data" send --partner bench "$work/local/$name" >/dev/null
    t1=$(now)
    echo "put $work/local/$name $work/remote/sftp-$name" > "$work/batch"
    sftp -q -b "$work/batch" -P "$p" -i "$work/client_key" \
      -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "$(id -un)@127.0.0.1" >/dev/null
    t2=$(now)
    cmp -s "$work/local/$name" "$work/remote/$name" || { echo "the delivered file differs"; exit 1; }
    sg=$(python3 -c "print($t1-$t0)"); os=$(python3 -c "print($t2-$t1)")
    printf '%-8s run %s: settlegate %6.2f s (%5s MB/s)   sftp %6.2f s (%5s MB/s)   ratio %.2f\n' \
      "$mode" "$run" "$sg" "$(mbps "$sg")" "$os" "$(mbps "$os")" "$(python3 -c "print($os/$sg)")"
  done
done
