"""Servers on 127.0.0.1 for the remote-expert tests.

A real llama-cpp-python server (`python -m llama_cpp.server`) on the 135M
model, and small fakes for what a real server does only when things go
wrong: a port that takes connections and never answers, and an HTTP server
that answers with garbage or an HTTP error.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ALIAS = "smollm2"  # the model name the llama.cpp server is started with


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def model_file(cache: Path) -> Path:
    from complm_cli.cache.catalog import load_catalog
    from complm_cli.cache.config import Settings
    from complm_cli.cache.store import Store

    return Store(Settings(cache_dir=cache, config_dir=cache / "config")).require(load_catalog().get("smollm2-135m"))


class LlamaServer:
    """llama-cpp-python's own OpenAI-compatible server, in a subprocess."""

    def __init__(self, model: Path, port: int | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        # A file, not a pipe: llama.cpp logs enough while loading to fill a pipe and block.
        self.log = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("llama_server.py")), "--model", str(model), "--host", "127.0.0.1",
             "--port", str(self.port), "--model_alias", ALIAS, "--n_threads", "1", "--n_ctx", "2048"],
            stdout=self.log, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.log.seek(0)
                raise RuntimeError(f"llama_cpp.server exited: {self.log.read()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/models", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError("llama_cpp.server did not start within 120 s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)
        self.log.close()


class SilentServer:
    """Takes connections and reads requests, and never sends a byte back (`talk` may, in a subclass)."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.conns: list[socket.socket] = []
        self.accepted = 0
        self.closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            self.conns.append(conn)
            threading.Thread(target=self.talk, args=(conn,), daemon=True).start()

    def talk(self, conn: socket.socket) -> None:
        pass

    def close(self) -> None:
        self.closed.set()
        self.sock.close()
        for c in self.conns:
            c.close()


class KeepAliveServer(SilentServer):
    """Answers 200 with an event stream that never ends and holds only `: keepalive` comments, one a second."""

    def __init__(self, every: float = 1.0):
        self.every = every
        super().__init__()

    def talk(self, conn: socket.socket) -> None:
        comment = b": keepalive\n\n"
        with contextlib.suppress(OSError):  # the client hung up, or the test closed the server
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
            while not self.closed.wait(self.every):
                conn.sendall(b"%x\r\n%s\r\n" % (len(comment), comment))


class FakeServer:
    """An HTTP server whose every answer is (status, content type, body), scripted per test."""

    def __init__(self, status: int = 200, body: str = "", content_type: str = "text/plain", headers: dict | None = None,
                 script: list[tuple[int, str, str]] | None = None):
        self.status, self.body, self.content_type, self.headers = status, body, content_type, headers or {}
        self.script = list(script or [])  # (status, content type, body) for the first requests, in order
        self.requests: list[dict] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                fake.requests.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()},
                                      "body": json.loads(raw) if raw else None})
                status, content_type, body = fake.script.pop(0) if fake.script else (fake.status, fake.content_type, fake.body)
                body = body.replace("{auth}", self.headers.get("authorization", "")).encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                for k, v in fake.headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def sse(*pieces: str) -> str:
    """A chat completion streamed as OpenAI does: a role chunk, one chunk per piece, [DONE]."""
    def chunk(delta: dict, finish=None) -> str:
        return "data: " + json.dumps({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 0, "model": "m",
                                      "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}) + "\n\n"

    return chunk({"role": "assistant", "content": ""}) + "".join(chunk({"content": p}) for p in pieces) \
        + chunk({}, "stop") + "data: [DONE]\n\n"


def catalog_text(*, local_roles: list[str], remotes: dict[str, dict], defaults: dict[str, str],
                 max_tokens: int = 64) -> str:
    """A catalog over the shipped one: smollm2-135m local in `local_roles`, each remote expert as given.

    `remotes` maps a name to {"roles": [...], "domains": [...], "remote": {...}}; the larger
    shipped models leave the default set, as in tests/fixtures/tiny_catalog.toml."""
    lines = ["[defaults]"] + [f'{k} = "{v}"' for k, v in defaults.items()]
    # Short replies keep the tests quick; every expert here is the 135M model.
    lines += ["", '[experts."smollm2-135m"]', f"roles = {json.dumps(local_roles)}",
              '[experts."smollm2-135m".generation]', f"max_tokens = {max_tokens}",
              '[experts."qwen2.5-coder-0.5b"]', "default = false",
              '[experts."qwen2.5-coder-1.5b"]', "default = false"]
    for name, entry in remotes.items():
        lines += ["", f'[experts."{name}"]', f'description = "{entry.get("description", name)}"',
                  f"roles = {json.dumps(entry['roles'])}", f"domains = {json.dumps(entry.get('domains', ['anything']))}",
                  "default = true"]
        generation = {"max_tokens": max_tokens, **entry.get("generation", {})}
        lines += [f'[experts."{name}".generation]'] + [f"{k} = {json.dumps(v)}" for k, v in generation.items()]
        lines += [f'[experts."{name}".remote]'] + [f"{k} = {json.dumps(v)}" for k, v in entry["remote"].items()]
    return "\n".join(lines) + "\n"
