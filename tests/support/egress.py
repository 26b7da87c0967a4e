"""Destinations for egress tests: a loopback HTTP site and the code a sandbox runs to reach it."""

import http.server
import socket
import threading

FETCH = (
    "import sys, urllib.error, urllib.request\n"
    "try:\n"
    "    print(urllib.request.urlopen(sys.argv[1], timeout=20).read().decode())\n"
    "except urllib.error.HTTPError as exc:\n"
    "    print(exc.code, exc.read().decode().strip())\n"
)


class Site:
    """An HTTP server on the host's loopback that counts the requests it gets."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        site = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                site.paths.append(self.path)
                body = f"page {self.path}".encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class RawSite:
    """A TCP server on the host's loopback that answers the first request head with a short 200 and keeps every
    byte it receives on each connection until the client is done, as a destination that reads all it is sent."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._connection, args=(conn,), daemon=True).start()

    def _connection(self, conn: socket.socket) -> None:
        data = b""
        with conn:
            conn.settimeout(2)
            try:
                while b"\r\n\r\n" not in data and (chunk := conn.recv(65536)):
                    data += chunk
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                while chunk := conn.recv(65536):
                    data += chunk
            except OSError:
                pass
        self.received.append(data)

    def close(self) -> None:
        self.listener.close()
