"""A stand-in for the Hugging Face Hub (or any plain file host) on 127.0.0.1.

Serves `GET`/`HEAD /{repo}/resolve/{revision}/{path}` (and any other path put
into it) from memory, like the Hub does for an LFS file: `Range: bytes=N-`
gives 206 with Content-Range, and every answer carries X-Linked-Etag (the
file's SHA-256) and X-Linked-Size. Knobs let a test cut a body short, serve
wrong bytes, slow a body down, send the Hub's 302 to a CDN, and count what was
asked for.

    with HubServer() as hub:
        hub.add("acme/tiny", "tiny.gguf", data)
        ... HF_ENDPOINT = hub.url ...
        assert hub.ranges("/acme/tiny/resolve/main/tiny.gguf") == ["bytes=1000-"]

The `hub` fixture starts one and points HF_ENDPOINT at it.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

CDN = "/_cdn"
_OMIT = object()


@dataclass
class Served:
    data: bytes
    etag: str | None  # X-Linked-Etag; None sends none
    content_type: str = "application/octet-stream"
    wrong: bytes | None = None  # sent instead of `data`; the headers still describe `data`


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    status: int = 0

    @property
    def range(self) -> str | None:
        return self.headers.get("range")


class HubServer:
    def __init__(self) -> None:
        self.files: dict[str, Served] = {}
        self.requests: list[Seen] = []
        self.sent: dict[str, int] = defaultdict(int)  # body bytes written per path, all requests together
        self.chunk = 16 * 1024
        self.delay = 0.0  # seconds slept after each chunk of a body
        self.redirect = False  # answer /resolve/ with a 302 to a CDN path, as the Hub does for LFS files
        self.connections = 0  # TCP connections accepted, bare connects (a reachability check) included
        self.omit_length: set[str] = set()  # paths answered without Content-Length (the body ends at close)
        self._cuts: dict[str, list[int]] = {}
        self._failures: dict[str, list[int]] = {}
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- content and knobs -------------------------------------------------------

    @staticmethod
    def resolve_path(repo: str, path: str, revision: str = "main") -> str:
        return f"/{repo}/resolve/{revision}/{path}"

    def add(self, repo: str, path: str, data: bytes, revision: str = "main", etag=_OMIT) -> str:
        """A Hub file; returns its URL path. `etag` overrides (or, None, drops) X-Linked-Etag."""
        return self.put(self.resolve_path(repo, path, revision), data, etag=etag)

    def put(self, url_path: str, data: bytes, content_type: str = "application/octet-stream", etag=_OMIT) -> str:
        """Any file at any path (a PyPI JSON page, a wheel, a mirror URL)."""
        sha = hashlib.sha256(data).hexdigest() if etag is _OMIT else etag
        self.files[url_path] = Served(data, sha, content_type)
        return url_path

    def cut(self, url_path: str, after: int, times: int = 1) -> None:
        """The next `times` GETs of the path send `after` bytes of the body, then close the connection."""
        self._cuts.setdefault(url_path, []).extend([after] * times)

    def fail(self, url_path: str, status: int = 500, times: int = 1) -> None:
        """The next `times` GETs of the path answer `status` with no body."""
        self._failures.setdefault(url_path, []).extend([status] * times)

    def serve_wrong(self, url_path: str, data: bytes) -> None:
        self.files[url_path].wrong = data

    def url_for(self, url_path: str) -> str:
        return self.url + url_path

    # --- what was asked --------------------------------------------------------------

    def count(self, method: str | None = None, path: str | None = None) -> int:
        with self._lock:
            return sum(1 for r in self.requests if (method is None or r.method == method) and (path is None or r.path.endswith(path)))

    def traffic(self) -> int:
        """Connections accepted so far, bare connects included, settled by a probe of our own.

        Connections are accepted in order, so once the probe is answered every
        earlier connect has been counted; the probe itself is left out.
        """
        with urllib.request.urlopen(self.url + "/_probe", timeout=10):
            pass
        with self._lock:
            self.requests = [r for r in self.requests if r.path != "/_probe"]
            self.connections -= 1
            return self.connections

    def ranges(self, path: str) -> list[str]:
        """The Range headers of the GETs of a path that got an answer other than the CDN redirect."""
        with self._lock:
            return [r.range for r in self.requests if r.method == "GET" and r.status != 302 and r.path.endswith(path) and r.range]

    # --- running ------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._httpd is not None, "the server is not started"
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "HubServer":
        self._httpd = _Server(("127.0.0.1", 0), _handler_for(self))
        self._httpd.hub = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- called by the handler ---------------------------------------------------------

    def _record(self, method: str, path: str, headers) -> Seen:
        seen = Seen(method, path, {k.lower(): v for k, v in headers.items()})
        with self._lock:
            self.requests.append(seen)
        return seen

    def _take(self, knobs: dict[str, list[int]], path: str) -> int | None:
        with self._lock:
            pending = knobs.get(path)
            return pending.pop(0) if pending else None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    hub: HubServer

    def verify_request(self, request, client_address) -> bool:
        with self.hub._lock:
            self.hub.connections += 1
        return True

    def handle_error(self, request, client_address) -> None:
        pass  # a client that hangs up mid-body (a killed pull) is expected here


_RANGE_RE = re.compile(r"^bytes=(\d+)-(\d*)$")


def _handler_for(hub: HubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        # HTTP/1.0: one request per connection, so closing mid-body is a plain hang-up.
        protocol_version = "HTTP/1.0"

        def log_message(self, format, *args) -> None:
            pass

        def do_HEAD(self) -> None:
            self._answer(body=False)

        def do_GET(self) -> None:
            self._answer(body=True)

        def _answer(self, body: bool) -> None:
            path = self.path.split("?", 1)[0]
            self.seen = hub._record(self.command, path, self.headers)
            lookup = path[len(CDN):] if path.startswith(CDN + "/") else path
            served = hub.files.get(lookup)
            if served is None:
                self._empty(200 if path == "/_probe" else 404)
                return
            if hub.redirect and lookup == path and "/resolve/" in path:
                self.send_response(302)
                self.send_header("Location", CDN + path)
                self._linked_headers(served)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if body and (status := hub._take(hub._failures, lookup)) is not None:
                self._empty(status)
                return
            data = served.wrong if served.wrong is not None else served.data
            start, end = 0, len(data)
            status = 200
            wanted = self.headers.get("Range")
            if wanted:
                m = _RANGE_RE.match(wanted.strip())
                if m is None or int(m.group(1)) >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                start = int(m.group(1))
                end = min(len(data), int(m.group(2)) + 1) if m.group(2) else len(data)
                status = 206
            self.send_response(status)
            self.send_header("Content-Type", served.content_type)
            if lookup not in hub.omit_length:
                self.send_header("Content-Length", str(end - start))
            self.send_header("Accept-Ranges", "bytes")
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
            self._linked_headers(served)
            self.end_headers()
            if not body:
                return
            limit = hub._take(hub._cuts, lookup)
            stop = end if limit is None else min(end, start + limit)
            self._send_body(lookup, data[start:stop])

        def _send_body(self, key: str, payload: bytes) -> None:
            try:
                for offset in range(0, len(payload), hub.chunk):
                    block = payload[offset:offset + hub.chunk]
                    self.wfile.write(block)
                    self.wfile.flush()
                    with hub._lock:
                        hub.sent[key] += len(block)
                    if hub.delay:
                        time.sleep(hub.delay)
            except (BrokenPipeError, ConnectionResetError):
                pass
            # Returning ends the connection (HTTP/1.0): a cut body stops here, short of Content-Length.

        def send_response(self, code: int, message: str | None = None) -> None:
            self.seen.status = code
            super().send_response(code, message)

        def _linked_headers(self, served: Served) -> None:
            # The Hub names the commit a revision resolved to; huggingface_hub refuses an answer without it.
            m = re.match(r"^/.+?/resolve/([^/]+)/", self.path)
            if m:
                revision = m.group(1)
                commit = revision if re.fullmatch(r"[0-9a-f]{40}", revision) else hashlib.sha1(revision.encode()).hexdigest()
                self.send_header("X-Repo-Commit", commit)
            if served.etag is not None:
                self.send_header("X-Linked-Etag", f'"{served.etag}"')
                self.send_header("ETag", f'"{served.etag}"')
            self.send_header("X-Linked-Size", str(len(served.data)))

        def _empty(self, status: int) -> None:
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

    return Handler


@pytest.fixture
def hub(monkeypatch):
    """A running Hub stand-in, with HF_ENDPOINT pointing at it."""
    server = HubServer().start()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    try:
        yield server
    finally:
        server.stop()
