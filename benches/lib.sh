# Shared by benches/pull.sh and benches/send.sh: a release build, a work
# directory removed on exit, a throwaway OpenSSH sshd on loopback ($port,
# host key pin $fp, client key $work/client_key) and a delay proxy in front
# of it ($proxy, $DELAY ms each way). Source it after setting DELAY.
# BIN_DIR=dir runs the binaries in dir instead (another build, compared).

if [ -z "${BIN_DIR:-}" ]; then
  cargo build --release --quiet --bins
  BIN_DIR=${CARGO_TARGET_DIR:-$PWD/target}/release
fi
bin=$BIN_DIR/settlegate
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

# The gateway's configuration: partner "bench" with endpoint $2 on port $1
# (through the proxy or not); the caller appends the endpoint's own keys.
endpoint_config() { # port name
  cat <<CFG
formats_dir = "$PWD/formats"
[[partners]]
id = "bench"
formats = ["card-settlement"]
[[partners.endpoints]]
name = "$2"
host = "127.0.0.1"
port = $1
user = "$(id -un)"
key_file = "$work/client_key"
host_key = "$fp"
CFG
}

# The median of the numbers given.
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
