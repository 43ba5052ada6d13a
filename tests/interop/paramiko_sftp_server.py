"""An SFTP server built on paramiko, serving one directory, for pickup tests
against a server other than OpenSSH. Its quirks are switched on by flags:

  --advertise-posix-rename  announce posix-rename@openssh.com, then answer
                            "unsupported" when it is used (as some servers do)
  --bare-listing            list names without any attributes
  --lie-size NAME           list NAME one byte larger than its stat says

Usage: paramiko_sftp_server.py ROOT HOST_KEY AUTHORIZED_PUB PORT_FILE [flags]
Writes the port it listens on (127.0.0.1) to PORT_FILE once ready.
"""

import argparse
import os
import socket
import threading

import paramiko
from paramiko import SFTPAttributes, SFTPHandle, SFTPServer, SFTPServerInterface
from paramiko.sftp import SFTP_NO_SUCH_FILE, SFTP_OK, SFTP_OP_UNSUPPORTED, SFTP_PERMISSION_DENIED

args = None


def local(root, path):
    path = os.path.normpath("/" + path).lstrip("/")
    return os.path.join(root, path)


class Handle(SFTPHandle):
    def stat(self):
        try:
            return SFTPAttributes.from_stat(os.fstat(self.readfile.fileno()))
        except OSError as e:
            return SFTPServer.convert_errno(e.errno)


class Root(SFTPServerInterface):
    def _p(self, path):
        return local(args.root, path)

    def list_folder(self, path):
        out = []
        try:
            names = os.listdir(self._p(path))
        except OSError as e:
            return SFTPServer.convert_errno(e.errno)
        for name in names:
            full = os.path.join(self._p(path), name)
            if args.bare_listing:
                a = SFTPAttributes()
            else:
                a = SFTPAttributes.from_stat(os.lstat(full))
                if name == args.lie_size:
                    a.st_size += 1
            a.filename = name
            out.append(a)
        return out

    def stat(self, path):
        try:
            return SFTPAttributes.from_stat(os.stat(self._p(path)))
        except OSError as e:
            return SFTPServer.convert_errno(e.errno)

    def lstat(self, path):
        try:
            return SFTPAttributes.from_stat(os.lstat(self._p(path)))
        except OSError as e:
            return SFTPServer.convert_errno(e.errno)

    def open(self, path, flags, attr):
        try:
            fd = os.open(self._p(path), flags, 0o644)
            f = os.fdopen(fd, "r+b" if flags & (os.O_WRONLY | os.O_RDWR) else "rb")
        except OSError as e:
            return SFTPServer.convert_errno(e.errno)
        h = Handle(flags)
        h.readfile = f
        h.writefile = f
        return h

    def remove(self, path):
        try:
            os.remove(self._p(path))
        except OSError as e:
            return SFTPServer.convert_errno(e.errno)
        return SFTP_OK

    def rename(self, oldpath, newpath):
        if os.path.exists(self._p(newpath)):
            return SFTP_PERMISSION_DENIED
        try:
            os.rename(self._p(oldpath), self._p(newpath))
        except OSError as e:
            return SFTPServer.convert_errno(e.errno)
        return SFTP_OK

    def posix_rename(self, oldpath, newpath):
        return SFTP_OP_UNSUPPORTED

    def mkdir(self, path, attr):
        try:
            os.mkdir(self._p(path))
        except OSError as e:
            return SFTPServer.convert_errno(e.errno)
        return SFTP_OK

    def canonicalize(self, path):
        return os.path.normpath("/" + path)


class Sftp(SFTPServer):
    def _send_server_version(self):
        if not args.advertise_posix_rename:
            return super()._send_server_version()
        t, data = self._read_packet()
        version = int.from_bytes(data[:4], "big")
        msg = paramiko.Message()
        msg.add_int(3)
        msg.add("posix-rename@openssh.com", "1")
        self._send_packet(paramiko.sftp.CMD_VERSION, msg)
        return version


class Auth(paramiko.ServerInterface):
    def __init__(self, key):
        self.key = key

    def get_allowed_auths(self, username):
        return "publickey"

    def check_auth_publickey(self, username, key):
        if key.asbytes() == self.key.asbytes():
            return paramiko.AUTH_SUCCESSFUL
        return paramiko.AUTH_FAILED

    def check_channel_request(self, kind, chanid):
        return paramiko.OPEN_SUCCEEDED if kind == "session" else paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED


def serve(conn, host_key, client_key):
    t = paramiko.Transport(conn)
    t.add_server_key(host_key)
    t.set_subsystem_handler("sftp", Sftp, Root)
    t.start_server(server=Auth(client_key))


def main():
    global args
    ap = argparse.ArgumentParser()
    ap.add_argument("root")
    ap.add_argument("host_key")
    ap.add_argument("authorized_pub")
    ap.add_argument("port_file")
    ap.add_argument("--advertise-posix-rename", action="store_true")
    ap.add_argument("--bare-listing", action="store_true")
    ap.add_argument("--lie-size")
    args = ap.parse_args()
    host_key = paramiko.Ed25519Key.from_private_key_file(args.host_key)
    kind, b64 = open(args.authorized_pub).read().split()[:2]
    client_key = paramiko.PKey.from_type_string(kind, __import__("base64").b64decode(b64))
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(s.getsockname()[1]))
    os.rename(tmp, args.port_file)
    while True:
        conn, _ = s.accept()
        threading.Thread(target=serve, args=(conn, host_key, client_key), daemon=True).start()


if __name__ == "__main__":
    main()
