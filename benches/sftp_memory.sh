#!/usr/bin/env bash
# Memory of settlegate's SFTP server after large uploads: resident set size
# (VmRSS) of `serve` at rest, after each of COUNT uploads of SIZE_MIB with
# OpenSSH `sftp put` (one session each), and once the sessions are gone.
# Usage: benches/sftp_memory.sh [SIZE_MIB] [COUNT] [PROFILE]   (default 200 2 release)
set -euo pipefail
cd "$(dirname "$0")/.."
mib=${1:-200}
count=${2:-2}
profile=${3:-release}
dir=${BENCH_DIR:-target/bench/sftp_memory}
rm -rf "$dir"; mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
if [ "$profile" = release ]; then
  cargo build --release --quiet --bin settlegate
  bin=${CARGO_TARGET_DIR:-target}/release/settlegate
else
  cargo build --quiet --bin settlegate
  bin=${CARGO_TARGET_DIR:-target}/debug/settlegate
fi
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
ssh-keygen -q -t ed25519 -N '' -f "$dir/client"
head -c $((mib << 20)) /dev/urandom > "$dir/upload.bin"
sed -e "s|^formats_dir = .*|formats_dir = \"$PWD/formats\"|" \
    -e "s|^listen = .*|listen = \"127.0.0.1:$port\"|" \
    -e "s|^  \"ssh-ed25519 .*|  \"$(cat "$dir/client.pub")\",|" \
    settlegate.toml > "$dir/settlegate.toml"
"$bin" --config "$dir/settlegate.toml" --data-dir "$dir/data" serve 2> "$dir/serve.log" &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
until grep -q "settlegate serving" "$dir/serve.log"; do
  kill -0 $pid 2>/dev/null || { cat "$dir/serve.log"; exit 1; }
  sleep 0.1
done
rss() { awk '/^VmRSS/ { printf "%.1f MiB", $2 / 1024 }' /proc/$pid/status; }
echo "at rest: $(rss)"
opts=(-i "$dir/client" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null
      -o IdentitiesOnly=yes -o BatchMode=yes -o LogLevel=ERROR)
for i in $(seq "$count"); do
  echo "put $dir/upload.bin /inbox/CSTL_031_20261121_$(printf %04d "$i").dat" > "$dir/batch"
  sftp -q -b "$dir/batch" -P "$port" "${opts[@]}" cardco@127.0.0.1 > /dev/null
  echo "after upload $i of $mib MiB: $(rss)"
done
# The client has exited; give the server a moment to end its side.
sleep 2
echo "idle, 2 s after the last session: $(rss)"
