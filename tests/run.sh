#!/usr/bin/env bash
# The whole test suite, on a fresh Debian machine of this project's kind:
# installs what the tests need when it is missing, makes sure the local
# PostgreSQL is up, then runs every test. This is the command README names
# and .ci/run calls.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the interoperability tests drive (real OpenSSH, curl, sqlite3).
need=()
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
# OpenSSH's sftp-server logs every open (tests/ha.rs counts downloads).
[ -x /usr/lib/openssh/sftp-server ] || need+=(openssh-sftp-server)
command -v sftp >/dev/null || need+=(openssh-client)
command -v curl >/dev/null || need+=(curl)
command -v psql >/dev/null || need+=(postgresql-client)
# Clients and servers other than OpenSSH for the SFTP interoperability tests.
command -v lftp >/dev/null || need+=(lftp)
[ -e /usr/lib/proftpd/mod_sftp.so ] || need+=(proftpd-core proftpd-mod-crypto)
command -v python3 >/dev/null || need+=(python3)
python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
# The console's browser tests (tests/console.rs) drive Debian's chromium
# through chromedriver.
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
if [ ${#need[@]} -gt 0 ]; then
  echo "tests/run.sh: installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

# paramiko and asyncssh (PyPI) drive and serve SFTP in tests/sftp_server.rs
# and tests/pull.rs.
if ! python3 -c 'import paramiko, asyncssh' 2>/dev/null; then
  echo "tests/run.sh: installing paramiko and asyncssh"
  python3 -m pip install -q paramiko asyncssh 2>/dev/null \
    || python3 -m pip install -q --break-system-packages paramiko asyncssh
fi

# The ledger tests run against real PostgreSQL at 127.0.0.1:5432 (user
# postgres, trust auth); each test creates and drops its own database.
if command -v pg_isready >/dev/null && ! pg_isready -q -h 127.0.0.1 -p 5432; then
  for v in /etc/postgresql/*; do
    [ -d "$v" ] && pg_ctlcluster --skip-systemctl-redirect "$(basename "$v")" main start || true
  done
  for _ in $(seq 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
fi
export SETTLEGATE_TEST_POSTGRES="${SETTLEGATE_TEST_POSTGRES:-postgres://postgres@127.0.0.1:5432/postgres}"

cargo test --locked "$@"

# The whole suite (no arguments) ends with README's fresh-machine commands,
# run as written, and, as root on Debian (CI), the Debian package: built,
# installed with dpkg, checked and removed (tests/deb.sh).
if [ $# -eq 0 ]; then
  bash tests/readme.sh
  if [ "$(id -u)" = 0 ] && command -v dpkg >/dev/null; then
    bash tests/deb.sh
  fi
fi
