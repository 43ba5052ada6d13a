#!/usr/bin/env bash
# Benchmark: OpenSSH `sftp put` of one large file to settlegate's SFTP server
# against the same upload to OpenSSH's own sshd (internal-sftp), in the same
# run, alternating, RUNS times each. Both on loopback, same client, same key
# type, the client's default cipher. settlegate's figure is the whole `put`
# as the partner sees it: transfer, then the close, which is answered only
# after the bytes are staged in the content store (fsync, rename) and
# recorded in the ledger, and judged (the file is random bytes: verified as
# card-settlement on its way in, invalid at record 1).
# Usage: benches/sftp_server.sh [SIZE_MIB] [RUNS]     (default 1024 3)
#        VERDICT_WAIT=0 benches/sftp_server.sh   (close answered right after
#        staging + recording; default: the sample's verdict_wait_seconds)
# Also printed: settlegate's transfer alone (open to close, from its log).
#        BIN_DIR=dir benches/sftp_server.sh   (the binary in dir instead)
# sshd needs root (privilege separation directory /run/sshd).
set -euo pipefail
cd "$(dirname "$0")/.."
mib=${1:-1024}
runs=${2:-3}
dir=${BENCH_DIR:-target/bench/sftp_server}
rm -rf "$dir"; mkdir -p "$dir/sshd-dest"
dir=$(cd "$dir" && pwd)
if [ -z "${BIN_DIR:-}" ]; then
  cargo build --release --quiet --bin settlegate
  BIN_DIR=${CARGO_TARGET_DIR:-target}/release
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
sg_port=$(free_port); sshd_port=$(free_port)

ssh-keygen -q -t ed25519 -N '' -f "$dir/client"
ssh-keygen -q -t ed25519 -N '' -f "$dir/sshd_host_key"
head -c $((mib << 20)) /dev/urandom > "$dir/upload.bin"
bytes=$(stat -c %s "$dir/upload.bin")

# settlegate: the sample configuration, its SFTP server on a free port, an
# account with the benchmark's client key.
sed -e "s|^formats_dir = .*|formats_dir = \"$PWD/formats\"|" \
    -e "s|^listen = .*|listen = \"127.0.0.1:$sg_port\"|" \
    -e "s|^  \"ssh-ed25519 .*|  \"$(cat "$dir/client.pub")\",|" \
    -e "s|^verdict_wait_seconds = .*|verdict_wait_seconds = ${VERDICT_WAIT:-10}|" \
    settlegate.toml > "$dir/settlegate.toml"
"$BIN_DIR/settlegate" --config "$dir/settlegate.toml" --data-dir "$dir/data" serve 2> "$dir/serve.log" &
sg_pid=$!

# sshd: a throwaway configuration on loopback.
cp "$dir/client.pub" "$dir/authorized_keys"
cat > "$dir/sshd_config" <<CFG
Port $sshd_port
ListenAddress 127.0.0.1
HostKey $dir/sshd_host_key
AuthorizedKeysFile $dir/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
StrictModes no
UsePAM no
PidFile $dir/sshd.pid
Subsystem sftp internal-sftp
CFG
mkdir -p /run/sshd
/usr/sbin/sshd -D -f "$dir/sshd_config" -E "$dir/sshd.log" &
sshd_pid=$!
trap 'kill $sg_pid $sshd_pid 2>/dev/null || true' EXIT
until grep -q "settlegate serving" "$dir/serve.log"; do
  kill -0 $sg_pid 2>/dev/null || { cat "$dir/serve.log"; exit 1; }
  sleep 0.1
done
until (exec 3<>/dev/tcp/127.0.0.1/$sshd_port) 2>/dev/null; do
  kill -0 $sshd_pid 2>/dev/null || { cat "$dir/sshd.log"; exit 1; }
  sleep 0.1
done

opts=(-i "$dir/client" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null
      -o IdentitiesOnly=yes -o BatchMode=yes -o LogLevel=ERROR)
put() { # port user remote-path -> seconds
  echo "put $dir/upload.bin $3" > "$dir/batch"
  local t0 t1
  t0=$(date +%s.%N)
  sftp -q -b "$dir/batch" -P "$1" "${opts[@]}" "$2@127.0.0.1" > /dev/null
  t1=$(date +%s.%N)
  echo "$t1 - $t0" | bc -l
}
mbs() { echo "$bytes / $1 / 1000000" | bc -l; }
sg=(); os=()
for i in $(seq "$runs"); do
  s=$(put "$sg_port" cardco "/inbox/upload-$i.bin"); sg+=("$s")
  o=$(put "$sshd_port" "$(id -un)" "$dir/sshd-dest/upload.bin"); os+=("$o")
  printf 'run %d: settlegate %.2f s (%.0f MB/s)   sshd %.2f s (%.0f MB/s)\n' "$i" "$s" "$(mbs "$s")" "$o" "$(mbs "$o")"
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
ms=$(median "${sg[@]}"); mo=$(median "${os[@]}")
printf 'median of %d, %d MiB: settlegate %.0f MB/s, OpenSSH sshd %.0f MB/s, ratio %.2fx (goal >= 1.0x)\n' \
  "$runs" "$mib" "$(mbs "$ms")" "$(mbs "$mo")" "$(echo "$mo / $ms" | bc -l)"
# settlegate's transfer alone: open → close of the upload handle.
mapfile -t tr < <(sed 's/\x1b\[[0-9;]*m//g' "$dir/serve.log" | grep -o 'transfer_ms=[0-9]*' | cut -d= -f2)
mt=$(median "${tr[@]}")
printf 'settlegate transfer alone (median, open to close): %.0f MB/s, %.2fx sshd; the rest of its put is staging + recording (+ judging)\n' \
  "$(echo "$bytes / ($mt / 1000) / 1000000" | bc -l)" "$(echo "$mo / ($mt / 1000)" | bc -l)"
cmp "$dir/upload.bin" "$dir/sshd-dest/upload.bin"
grep -c '"upload taken"\|upload taken' "$dir/serve.log" > /dev/null
