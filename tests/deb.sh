#!/usr/bin/env bash
# Builds the Debian package with `cargo deb`, installs it with `dpkg -i` and
# checks what it installed: the binary, the unit (with `systemd-analyze
# verify` where available), the configuration, the formats, the system user
# and its data directory; then that the installed binary checks the installed
# configuration. Run by hand (a release build and dpkg on this machine):
#
#     bash tests/deb.sh
#
# It changes the machine (installs the package; `KEEP=1` leaves it installed).
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "deb.sh: FAILED: $*" >&2; exit 1; }

command -v dpkg >/dev/null || fail "dpkg is not here (Debian or Ubuntu only)"
if ! cargo deb --version >/dev/null 2>&1; then
    cargo install --locked cargo-deb
fi
if ! command -v adduser >/dev/null; then
    apt-get install -y -qq adduser
fi

deb=$(cargo deb 2>/dev/null | tail -n 1)
[ -f "$deb" ] || fail "cargo deb did not print the package it built"
echo "built $deb"

dpkg -i "$deb"

[ -x /usr/bin/settlegate ] || fail "/usr/bin/settlegate"
unit=$(systemctl show -P FragmentPath settlegate 2>/dev/null || true)
[ -n "$unit" ] || unit=/lib/systemd/system/settlegate.service
[ -f "$unit" ] || unit=/usr/lib/systemd/system/settlegate.service
[ -f "$unit" ] || fail "settlegate.service is not installed"
for want in 'User=settlegate' 'ProtectSystem=strict' 'ReadWritePaths=/var/lib/settlegate' \
    'NoNewPrivileges=yes' 'PrivateTmp=yes' 'Restart=on-failure' 'ExecReload=/bin/kill -HUP $MAINPID'; do
    grep -qxF "$want" "$unit" || fail "$unit lacks $want"
done
if command -v systemd-analyze >/dev/null; then
    systemd-analyze verify "$unit" || fail "systemd-analyze verify $unit"
fi
[ -f /etc/settlegate/settlegate.toml ] || fail "/etc/settlegate/settlegate.toml"
[ "$(stat -c %G /etc/settlegate/settlegate.toml)" = settlegate ] || fail "the configuration's group is not settlegate"
ls /usr/share/settlegate/formats/card-settlement.toml >/dev/null || fail "formats"
getent passwd settlegate >/dev/null || fail "no settlegate user"
[ "$(getent passwd settlegate | cut -d: -f7)" = /usr/sbin/nologin ] || fail "the settlegate user has a login shell"
[ "$(stat -c %U /var/lib/settlegate)" = settlegate ] || fail "/var/lib/settlegate is not the settlegate user's"
out=$(cd / && setpriv --reuid=settlegate --regid=settlegate --init-groups \
    /usr/bin/settlegate --config /etc/settlegate/settlegate.toml check) \
    || fail "the installed configuration fails check: $out"
echo "$out"
case "$out" in *"formats: bank-transfer-request"*) ;; *) fail "check did not load the installed formats: $out" ;; esac

if [ -z "${KEEP:-}" ]; then
    dpkg -r settlegate
fi
echo "deb.sh: ok"
