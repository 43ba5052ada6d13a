#!/usr/bin/env python3
"""A TCP proxy that adds a fixed one-way delay in each direction without
limiting bandwidth: a stand-in for `tc netem delay` where the kernel has no
netem. Each chunk read is released to the other side DELAY_MS after it
arrived, so a 10 ms delay gives a 20 ms round trip.

usage: delay_proxy.py LISTEN_PORT UPSTREAM_PORT DELAY_MS
"""
import collections
import socket
import sys
import threading
import time


def pipe(src, dst, delay):
    queue = collections.deque()
    ready = threading.Condition()
    done = [False]

    def reader():
        while True:
            try:
                data = src.recv(1 << 20)
            except OSError:
                data = b""
            with ready:
                queue.append((time.monotonic() + delay, data))
                ready.notify()
            if not data:
                return

    def writer():
        while True:
            with ready:
                while not queue:
                    ready.wait()
                due, data = queue.popleft()
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            if not data:
                try:
                    dst.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                return
            try:
                dst.sendall(data)
            except OSError:
                return

    threading.Thread(target=reader, daemon=True).start()
    threading.Thread(target=writer, daemon=True).start()


def main():
    listen_port, upstream_port, delay_ms = (int(a) for a in sys.argv[1:4])
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", listen_port))
    server.listen(16)
    while True:
        client, _ = server.accept()
        upstream = socket.create_connection(("127.0.0.1", upstream_port))
        for s in (client, upstream):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 << 20)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32 << 20)
        pipe(client, upstream, delay_ms / 1000.0)
        pipe(upstream, client, delay_ms / 1000.0)


if __name__ == "__main__":
    main()
