"""Remote experts in the catalog, the pool and the model commands; no model runs here."""

from __future__ import annotations

import json
import threading

import pytest
from typer.testing import CliRunner

from complm_cli.cache.catalog import load_catalog
from complm_cli.cli.app import app
from complm_cli.errors import CatalogError
from complm_cli.compose.pool import ModelPool
from complm_cli.experts.base import Worker
from tests.remote_servers import FakeServer, SilentServer, catalog_text

runner = CliRunner()

REMOTE = '''
[experts."remote-smol"]
description = "SmolLM2 on a llama.cpp server"
roles = ["expert"]
domains = ["word meanings"]
[experts."remote-smol".remote]
api_base = "http://127.0.0.1:8080/v1/"
model_name = "smollm2"
{extra}
'''


def catalog(tmp_path, extra: str = "", text: str | None = None):
    path = tmp_path / "extra.toml"
    path.write_text(text if text is not None else REMOTE.replace("{extra}", extra))
    return load_catalog([path]), path


def test_a_remote_expert_needs_no_file_and_has_defaults(tmp_path):
    cat, _ = catalog(tmp_path)
    e = cat.get("remote-smol")
    assert e.remote.api_base == "http://127.0.0.1:8080/v1"  # the trailing slash goes
    assert e.remote.model_name == "smollm2" and e.remote.api_key_name is None
    assert e.remote.max_parallel == 1 and e.remote.timeout == 60.0
    assert e.file == "" and e.sources == () and e.sha256 is None
    assert cat.get("smollm2-135m").remote is None


def test_a_shipped_expert_can_be_moved_to_a_server(tmp_path):
    text = '''
[experts."qwen2.5-coder-1.5b".remote]
api_base = "https://gpu-box.example:8000/v1"
model_name = "Qwen/Qwen2.5-Coder-1.5B-Instruct"
max_parallel = 8
timeout = 30.5
'''
    cat, _ = catalog(tmp_path, text=text)
    e = cat.get("qwen2.5-coder-1.5b")
    assert e.remote.max_parallel == 8 and e.remote.timeout == 30.5
    assert e.remote.endpoint == ("https://gpu-box.example:8000/v1", "Qwen/Qwen2.5-Coder-1.5B-Instruct")
    assert "planner" in e.roles  # the rest of the entry stays


@pytest.mark.parametrize("extra, key, words", [
    ('max_parallel = 0', "remote.max_parallel", "1 or more"),
    ('timeout = 0', "remote.timeout", "above 0"),
    ('timeout = "soon"', "remote.timeout", "a number"),
    ('colour = "red"', "remote.colour", "not a key"),
    ('api_key_name = "sk-live-123456"', "remote.api_key_name", "not the key itself"),
])
def test_bad_remote_keys_name_the_file_entry_and_key(tmp_path, extra, key, words):
    with pytest.raises(CatalogError) as info:
        catalog(tmp_path, extra)
    message = info.value.message
    assert "extra.toml" in message and '[experts."remote-smol"]' in message and f"'{key}'" in message
    assert words in message
    assert "sk-live-123456" not in message  # a pasted key is never repeated


@pytest.mark.parametrize("url, words", [
    ("ftp://host/v1", "http:// or https://"),
    ("127.0.0.1:8080/v1", "http:// or https://"),
    ("http://me:hunter2@host/v1", "user name or password"),
])
def test_bad_api_base(tmp_path, url, words):
    text = REMOTE.replace("http://127.0.0.1:8080/v1/", url).replace("{extra}", "")
    with pytest.raises(CatalogError) as info:
        catalog(tmp_path, text=text)
    assert "'remote.api_base'" in info.value.message and words in info.value.message
    assert "hunter2" not in info.value.message


def test_model_name_is_required_and_the_embedder_stays_local(tmp_path):
    with pytest.raises(CatalogError, match="'remote.model_name': is missing"):
        catalog(tmp_path, text=REMOTE.replace('model_name = "smollm2"', "").replace("{extra}", ""))
    text = '[embedders."all-minilm-l6-v2".remote]\napi_base = "http://h/v1"\nmodel_name = "m"\n'
    with pytest.raises(CatalogError, match="embedder runs locally"):
        catalog(tmp_path, text=text)


# --- the pool: endpoint capacity, no memory ------------------------------------------


class NoModel(Worker):
    """A worker that holds nothing and is never asked to stream: only the pool's bookkeeping is tested."""

    def stream(self, messages, **kwargs):
        raise AssertionError("not streamed in these tests")


def test_the_pool_caps_requests_per_endpoint_and_ignores_memory(tmp_path):
    text = REMOTE.replace("{extra}", "max_parallel = 2") + '''
[experts."remote-twin"]
description = "The same server and model under another name"
roles = ["expert"]
[experts."remote-twin".remote]
api_base = "http://127.0.0.1:8080/v1"
model_name = "smollm2"
max_parallel = 2
[experts."remote-other"]
description = "Another server"
roles = ["expert"]
[experts."remote-other".remote]
api_base = "http://127.0.0.1:9090/v1"
model_name = "smollm2"
'''
    cat, _ = catalog(tmp_path, text=text)
    paths_asked = []
    pool = ModelPool(lambda e, path: NoModel(e), lambda e: paths_asked.append(e.name), budget=1)
    a = pool.acquire(cat.get("remote-smol"))
    b = pool.acquire(cat.get("remote-twin"))  # same endpoint: the second of its two slots
    other = pool.acquire(cat.get("remote-other"))  # another endpoint has its own slot
    assert paths_asked == [] and pool.used == 0  # nothing local: no path, no memory

    got = []
    waiter = threading.Thread(target=lambda: got.append(pool.acquire(cat.get("remote-smol"))))
    waiter.start()
    waiter.join(0.5)
    assert waiter.is_alive() and not got  # the endpoint is full
    pool.release(a)
    waiter.join(10)
    assert got and got[0] is a  # the freed worker is reused
    for w in (b, got[0], other):
        pool.release(w)
    pool.close()


# --- list, pull, verify, rm, doctor ---------------------------------------------------


def test_list_shows_the_endpoint_and_model_commands_skip_remote_experts(tmp_path, monkeypatch):
    _, path = catalog(tmp_path, 'api_key_name = "SMOL_KEY"')
    monkeypatch.setenv("SMOL_KEY", "the-secret-key")
    result = runner.invoke(app, ["list", "--json", "--catalog", str(path)])
    assert result.exit_code == 0, result.output
    row = next(r for r in json.loads(result.stdout) if r["name"] == "remote-smol")
    assert row["remote"] == {"api_base": "http://127.0.0.1:8080/v1", "model_name": "smollm2",
                             "api_key_name": "SMOL_KEY", "max_parallel": 1, "timeout": 60.0}
    assert row["pulled"] is None and row["path"] is None  # nothing to pull: not applicable, like a tool
    table = runner.invoke(app, ["list", "--catalog", str(path)])
    assert "remote" in table.stdout and "the-secret-key" not in table.output
    for command, verb in (("pull", "pull"), ("verify", "verify"), ("rm", "remove")):
        result = runner.invoke(app, [command, "remote-smol", "--catalog", str(path)])
        assert result.exit_code == 0, result.output
        assert f"remote-smol runs on http://127.0.0.1:8080/v1; nothing to {verb}" in result.output


def test_doctor_checks_each_endpoint_and_never_shows_the_key(tmp_path, monkeypatch):
    monkeypatch.setenv("SMOL_KEY", "the-secret-key")
    good = FakeServer(body=json.dumps({"object": "list", "data": [{"id": "smollm2", "object": "model"}]}),
                      content_type="application/json")
    echo = FakeServer(status=401, body='{"error": {"message": "bad key {auth}"}}', content_type="application/json")
    silent = SilentServer()
    try:
        remotes = {
            "up": {"roles": ["expert"], "remote": {"api_base": good.url, "model_name": "smollm2", "api_key_name": "SMOL_KEY"}},
            "other-model": {"roles": ["expert"], "remote": {"api_base": good.url, "model_name": "llama"}},
            "echo": {"roles": ["expert"], "remote": {"api_base": echo.url, "model_name": "m", "api_key_name": "SMOL_KEY"}},
            "silent": {"roles": ["expert"], "remote": {"api_base": silent.url, "model_name": "m", "timeout": 1}},
            "down": {"roles": ["expert"], "remote": {"api_base": "http://127.0.0.1:9/v1", "model_name": "m"}},
            "no-key": {"roles": ["expert"], "remote": {"api_base": good.url, "model_name": "m", "api_key_name": "UNSET_KEY"}},
        }
        path = tmp_path / "cat.toml"
        path.write_text(catalog_text(local_roles=["planner", "aggregator", "fallback", "expert"], remotes=remotes,
                                     defaults={"planner": "smollm2-135m", "aggregator": "smollm2-135m", "fallback": "smollm2-135m"}))
        result = runner.invoke(app, ["doctor", "--json", "--catalog", str(path)])
        assert result.exit_code == 0, result.output
        report = {r["name"]: r for r in json.loads(result.stdout)["remote"]}
        assert report["up"]["reachable"] and report["up"]["served"] and report["up"]["message"] == "serves smollm2"
        assert report["other-model"]["reachable"] and report["other-model"]["served"] is False
        assert "lists smollm2, not llama" in report["other-model"]["message"]
        assert report["echo"]["reachable"] and "HTTP 401" in report["echo"]["message"]
        assert not report["silent"]["reachable"] and "did not answer within 1 s" in report["silent"]["message"]
        assert not report["down"]["reachable"] and "not reachable" in report["down"]["message"]
        assert "UNSET_KEY" in report["no-key"]["message"] and "is not set" in report["no-key"]["message"]
        sent = {r["headers"]["authorization"] for r in good.requests}
        assert "Bearer the-secret-key" in sent  # sent to the server, but never shown
        assert "the-secret-key" not in result.output
        text = runner.invoke(app, ["doctor", "--catalog", str(path)])
        assert "serves smollm2" in text.stdout and "the-secret-key" not in text.output
    finally:
        good.close()
        echo.close()
        silent.close()
