"""A real HTTP server on 127.0.0.1 (ephemeral port, in a thread) for download tests."""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class WeightServer:
    """Serves files by name with HTTP Range support. `faults[name]` is a list of what the
    next requests for that name get: "404", "500", ("drop", n) to cut the connection after
    n bytes, ("slow", s) to wait s seconds before answering."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = dict(files)
        self.faults: dict[str, list] = {}
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                name = self.path.rsplit("/", 1)[-1]
                server.requests.append((name, self.headers.get("Range")))
                fault = server.faults.get(name, []).pop(0) if server.faults.get(name) else None
                if fault == "500":
                    return self.send_error(500)
                if fault == "404" or name not in server.files:
                    return self.send_error(404)
                if isinstance(fault, tuple) and fault[0] == "slow":
                    time.sleep(fault[1])
                body, start = server.files[name], 0
                if self.headers.get("Range", "").startswith("bytes="):
                    start = int(self.headers["Range"][6:].rstrip("-"))
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                if isinstance(fault, tuple) and fault[0] == "drop":
                    self.wfile.write(body[start:start + fault[1]])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(body[start:])

        class QuietServer(ThreadingHTTPServer):
            def handle_error(self, request, client_address) -> None:
                pass  # clients hanging up on purpose (timeouts) are part of the tests

        self.httpd = QuietServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/weights"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
