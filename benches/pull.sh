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

cargo build --release --quiet --bin settlegate
bin=$PWD/target/release/settlegate
work=$(mktemp -d)
cleanup() { kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"; }
pids=()
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
proxy=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
ssh-keygen -q -t ed25519 -N '' -f "$work/host_key"
ssh-keygen -q -t ed25519 -N '' -f "$work/client_key"
cp "$work/client_key.pub" "$work/authorized_keys"
cat > "$work/sshd_config" <<CFG
Port $port
ListenAddress 127.0.0.1
HostKey $work/host_key
PidFile $work/sshd.pid
AuthorizedKeysFile $work/authorized_keys
StrictModes no
UsePAM no
PasswordAuthentication no
PermitRootLogin prohibit-password
Subsystem sftp internal-sftp
LogLevel ERROR
CFG
[ "$(id -u)" = 0 ] && mkdir -p /run/sshd
/usr/sbin/sshd -D -e -f "$work/sshd_config" 2>"$work/sshd.log" & pids+=($!)
python3 benches/delay_proxy.py "$proxy" "$port" "$DELAY" & pids+=($!)
sleep 1
fp=$(ssh-keygen -lf "$work/host_key.pub" | awk '{print $2}')
mkdir -p "$work/remote"
name=CSTL_031_20261121_0001.dat
echo "generating $SIZE ..."
head -c "$bytes" /dev/urandom > "$work/remote/$name"

config() { # port
  cat <<CFG
formats_dir = "$PWD/formats"
[[partners]]
id = "bench"
formats = ["card-settlement"]
[[partners.endpoints]]
name = "primary"
host = "127.0.0.1"
port = $1
user = "$(id -un)"
key_file = "$work/client_key"
host_key = "$fp"
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
