"""An image host on 127.0.0.1 for the fetch tests: counts connections, records Host headers, serves a PNG
(``/img.png``), a slow answer (``/slow``: headers, then one byte a second), and 404 for anything else.
Bounded: at most ``slow_bytes`` slow bytes per connection, and every thread stops with :meth:`close`."""

from __future__ import annotations

import socket
import threading


class ImageHost:
    def __init__(self, png: bytes, slow_bytes: int = 60) -> None:
        self.png = png
        self.slow_bytes = slow_bytes
        self.connections = 0
        self.hosts: list[str] = []
        self.connected = threading.Event()  # set at the first connection
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self._sock.settimeout(0.2)
        self.port = int(self._sock.getsockname()[1])
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except (TimeoutError, OSError):
                continue
            with self._lock:
                self.connections += 1
            self.connected.set()
            t = threading.Thread(target=self._answer, args=(conn,), daemon=True)
            self._threads.append(t)
            t.start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            head = b""
            try:
                while b"\r\n\r\n" not in head and len(head) < 65536:
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    head += chunk
            except OSError:
                return
            lines = head.decode("latin-1").split("\r\n")
            path = lines[0].split(" ")[1] if len(lines[0].split(" ")) > 1 else "/"
            with self._lock:
                self.hosts += [
                    v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:]) if k == "Host"
                ]
            try:
                if path == "/img.png":
                    conn.sendall(
                        b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nConnection: close\r\n"
                        + f"Content-Length: {len(self.png)}\r\n\r\n".encode()
                        + self.png
                    )
                elif path == "/slow":
                    conn.sendall(
                        b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: 100000\r\n\r\n"
                    )
                    for _ in range(self.slow_bytes):
                        if self._stop.wait(1.0):
                            return
                        conn.sendall(b"\x89")
                else:
                    conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            except OSError:
                return

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(5)
        self._sock.close()

    def __enter__(self) -> ImageHost:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
