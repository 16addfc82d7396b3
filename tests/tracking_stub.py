"""Tracking servers that fail: a closed port, and a local HTTP server (`http.server` in a thread)
that answers every request with one status. The URI of each carries a password, so a test can
look for it wherever the failure is told."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

USER = "loop"
PASSWORD = "tr4ck-P4SS-5117"
#: How each failure is told: what the message says besides the redacted URI.
FAILURES = {
    "unreachable": "cannot be reached (connection refused)",
    "401": "refused the request (HTTP 401)",
    "500": "failed (HTTP 500)",
}


def closed_port() -> int:
    """A local port nothing listens on: a connection is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Handler(BaseHTTPRequestHandler):
    status = 500

    def _answer(self) -> None:
        body = f"stub tracking server: {self.status}".encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _answer

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base's name
        pass


@contextmanager
def failing_tracking_uri(mode: str) -> Iterator[str]:
    """An http URI with a password whose server fails as `mode` says (a key of FAILURES)."""
    if mode == "unreachable":
        yield f"http://{USER}:{PASSWORD}@127.0.0.1:{closed_port()}/"
        return
    handler = type("Handler", (_Handler,), {"status": int(mode)})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{USER}:{PASSWORD}@127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def shown(uri: str) -> str:
    """`uri` as the loop must show it: the password as `***`."""
    return uri.replace(f":{PASSWORD}@", ":***@")


def files_holding(folder: Path, secret: str = PASSWORD) -> list[Path]:
    """Every file under `folder` whose bytes hold `secret`."""
    if not folder.exists():
        return []
    return [p for p in folder.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
