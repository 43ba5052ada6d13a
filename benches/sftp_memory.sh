#!/usr/bin/env bash
# Memory of settlegate's SFTP server under concurrent uploads: PARTNERS
# partners (one account and one session each) push SIZE_MIB each at the
# same moment with OpenSSH `sftp put`. Printed: the resident set size
# (VmRSS) of `serve` at rest, its peak while the uploads run (VmHWM, the
# kernel's own high-water mark), once every close is answered, and idle
# 2 s after the sessions are gone; and the uploads' wall time.
# Usage: benches/sftp_memory.sh [SIZE_MIB] [PARTNERS] [PROFILE]   (default 256 20 release)
#        BIN_DIR=dir benches/sftp_memory.sh   (the binaries in dir instead)
set -euo pipefail
cd "$(dirname "$0")/.."
mib=${1:-256}
partners=${2:-20}
profile=${3:-release}
dir=${BENCH_DIR:-target/bench/sftp_memory}
rm -rf "$dir"; mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
if [ -n "${BIN_DIR:-}" ]; then
  bin=$BIN_DIR/settlegate
elif [ "$profile" = release ]; then
  cargo build --release --quiet --bin settlegate
  bin=${CARGO_TARGET_DIR:-target}/release/settlegate
else
  cargo build --quiet --bin settlegate
  bin=${CARGO_TARGET_DIR:-target}/debug/settlegate
fi
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
ssh-keygen -q -t ed25519 -N '' -f "$dir/client"
head -c $((mib << 20)) /dev/urandom > "$dir/upload.bin"
key=$(cat "$dir/client.pub")
{
  cat <<CFG
formats_dir = "$PWD/formats"
[sftp_server]
listen = "127.0.0.1:$port"
max_file_bytes = 4294967296
verdict_wait_seconds = 10
max_sessions_per_partner = 4
# Every partner connects from 127.0.0.1 here, all at once.
max_unauthenticated_per_address = $((partners * 2))
CFG
  for i in $(seq -w "$partners"); do
    printf '[[sftp_server.accounts]]\npartner = "p%s"\nauthorized_keys = ["%s"]\n' "$i" "$key"
  done
  for i in $(seq -w "$partners"); do
    printf '[[partners]]\nid = "p%s"\nformats = ["card-settlement"]\n' "$i"
  done
} > "$dir/settlegate.toml"
"$bin" --config "$dir/settlegate.toml" --data-dir "$dir/data" serve 2> "$dir/serve.log" &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
until grep -q "settlegate serving" "$dir/serve.log"; do
  kill -0 $pid 2>/dev/null || { cat "$dir/serve.log"; exit 1; }
  sleep 0.1
done
status() { awk -v k="$1:" '$1 == k { printf "%.1f MiB", $2 / 1024 }' /proc/$pid/status; }
echo "at rest: $(status VmRSS)"
opts=(-i "$dir/client" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null
      -o IdentitiesOnly=yes -o BatchMode=yes -o LogLevel=ERROR)
t0=$(date +%s.%N)
clients=()
for i in $(seq -w "$partners"); do
  echo "put $dir/upload.bin /inbox/CSTL_031_20261121_00$i.dat" > "$dir/batch-$i"
  sftp -q -b "$dir/batch-$i" -P "$port" "${opts[@]}" "p$i@127.0.0.1" > "$dir/client-$i.log" 2>&1 &
  clients+=($!)
done
failed=0
for c in "${clients[@]}"; do wait "$c" || failed=$((failed + 1)); done
t1=$(date +%s.%N)
echo "$partners uploads of $mib MiB at once: $(echo "$t1 - $t0" | bc -l | xargs printf '%.1f') s, $failed failed"
echo "peak while uploading (VmHWM): $(status VmHWM)"
echo "after the last close: $(status VmRSS)"
# The clients have exited; give the server a moment to end its side.
sleep 2
echo "idle, 2 s after the last session: $(status VmRSS)"
taken=$(sed 's/\x1b\[[0-9;]*m//g' "$dir/serve.log" | grep -c 'upload taken' || true)
echo "uploads taken (judged in the close): $taken of $partners"
