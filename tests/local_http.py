"""A real HTTP server on 127.0.0.1 for download tests: Range requests, cut connections, 404."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


@dataclass
class Files:
    """What the test server serves and what it was asked."""

    url: str = ""
    files: dict[str, bytes] = field(default_factory=dict)
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range)
    drop_after: dict[str, int] = field(default_factory=dict)  # path -> bytes sent, once
    ignore_range: bool = False


class Server(ThreadingHTTPServer):
    files: Files


class Handler(BaseHTTPRequestHandler):
    """Serves ``Files``: 404 for unknown paths, ``Range: bytes=N-``, one dropped connection."""

    server: Server

    def do_GET(self) -> None:
        state = self.server.files
        state.requests.append((self.path, self.headers.get("Range")))
        data = state.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        start = None if state.ignore_range else range_start(self.headers.get("Range"))
        if start is not None and start >= len(data):
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(data)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = data[start or 0 :]
        self.send_response(200 if start is None else 206)
        if start is not None:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: state.drop_after.pop(self.path, None)])  # then HTTP/1.0 closes

    def log_message(self, format: str, *args: object) -> None:
        """Keep the test output quiet."""


def range_start(header: str | None) -> int | None:
    """N from ``bytes=N-``."""
    match = re.fullmatch(r"bytes=(\d+)-", header or "")
    return int(match.group(1)) if match else None


@pytest.fixture
def server() -> Iterator[Files]:
    httpd = Server(("127.0.0.1", 0), Handler)
    httpd.files = Files(url=f"http://127.0.0.1:{httpd.server_address[1]}")
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield httpd.files
    httpd.shutdown()
    httpd.server_close()
    thread.join()
