"""A local HTTP server on 127.0.0.1 for download tests, plus addresses that hang or refuse.

``LocalServer`` serves ``files`` (URL path -> bytes) from a thread and counts the requests;
``truncate`` names paths whose next N answers announce the full length but stop halfway and close
the connection (an interrupted download).
"""
import contextlib
import http.server
import socket
import threading
from typing import Dict, Iterator


class LocalServer:
    """``with LocalServer({'/w.pth': data}) as server: server.url('/w.pth')``."""

    def __init__(self, files: Dict[str, bytes]):
        self.files = dict(files)
        self.truncate: Dict[str, int] = {}
        self.requests = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's naming
                owner.requests.append(self.path)
                data = owner.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if owner.truncate.get(self.path, 0) > 0:
                    owner.truncate[self.path] -= 1
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def __enter__(self) -> "LocalServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@contextlib.contextmanager
def silent_server() -> Iterator[str]:
    """A URL whose server accepts the connection (kernel backlog) but never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/weights.pth"
    finally:
        sock.close()


def refused_url() -> str:
    """A URL on a 127.0.0.1 port nothing listens on (connection refused)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}/weights.pth"
