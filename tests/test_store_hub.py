"""Pulling models from a Hub stand-in, through complm_cli.cache.store.Store and the CLI.

Every model here is a few hundred KB of random bytes served by tests/hubserver.py
on 127.0.0.1; the real Hub is never contacted. Catalog entries are written to
tmp_path and layered over the shipped catalog with --catalog.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import Result
from typer.testing import CliRunner

from complm_cli.cache.catalog import Expert, catalog_for
from complm_cli.cache import sources
from complm_cli.cli.app import app
from complm_cli.cache.config import load_settings, parse_size
from complm_cli.errors import DownloadError, ExitCode, IntegrityError, NotFoundError
from complm_cli.cache.store import MANIFEST, Store
from hubserver import HubServer, hub  # noqa: F401  (hub is a fixture)

ROOT = Path(__file__).resolve().parent.parent
NAME = "tiny"
FILE = "tiny.Q4_0.gguf"
REPO = "acme/tiny-GGUF"
HUB_PATH = HubServer.resolve_path(REPO, FILE)


# --- helpers ------------------------------------------------------------------


def blob(size: int = 300_000, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def hub_source(repo: str = REPO, file: str = FILE) -> dict:
    return {"type": "hub", "repo": repo, "file": file}


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return json.dumps(value)  # strings and lists of strings are spelled the same in TOML


def write_catalog(path: Path, data: bytes, sources: list[dict], *, name: str = NAME, file: str = FILE,
                  pin_sha: bool = True, pin_size: bool = True) -> Path:
    """A catalog file with one expert entry describing `data`."""
    lines = [f'[experts."{name}"]', 'description = "A tiny fake model for tests."', 'roles = ["expert"]', f"file = {_toml(file)}"]
    if pin_size:
        lines.append(f"size = {len(data)}")
    if pin_sha:
        lines.append(f'sha256 = "{sha256(data)}"')
    for source in sources:
        lines.append(f'[[experts."{name}".sources]]')
        lines += [f"{k} = {_toml(v)}" for k, v in source.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def open_store(catalog: Path, name: str = NAME) -> tuple[Store, Expert]:
    settings = load_settings().replace(catalog=catalog)
    return Store(settings), catalog_for(settings).get(name)


def complm(*args) -> Result:
    return CliRunner().invoke(app, [str(a) for a in args])


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got: {stderr!r}"
    assert lines[0].startswith("complm: ")
    return lines[0]


def list_row(catalog: Path, name: str = NAME) -> dict:
    result = complm("list", "--json", "--catalog", catalog)
    assert result.exit_code == 0, result.output
    return next(r for r in json.loads(result.stdout) if r["name"] == name)


def assert_pulled(store: Store, expert: Expert, data: bytes) -> None:
    assert store.is_pulled(expert)
    final = store.path(expert)
    assert final == store.root / expert.name / expert.file
    assert final.read_bytes() == data
    manifest = json.loads((store.folder(expert) / MANIFEST).read_text())
    assert manifest["size"] == len(data)
    assert manifest["sha256"] == sha256(data)
    assert manifest["file"] == expert.file
    assert not (store.folder(expert) / ".partial").exists()


def assert_not_pulled(store: Store, expert: Expert) -> None:
    assert not store.is_pulled(expert)
    assert not store.path(expert).exists()
    assert not (store.folder(expert) / MANIFEST).exists()


def part_file(store: Store, expert: Expert) -> Path:
    return store.folder(expert) / ".partial" / (expert.file + ".part")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn_pull(catalog: Path, name: str = NAME) -> subprocess.Popen:
    # The environment (COMPLM_CACHE_DIR, HF_ENDPOINT, ...) is this test's, set by its fixtures.
    return subprocess.Popen(
        [sys.executable, "-m", "complm_cli", "pull", name, "--catalog", str(catalog)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


# --- (1) a plain Hub pull -----------------------------------------------------------


@pytest.mark.parametrize("redirect", [False, True], ids=["direct", "cdn-redirect"])
def test_hub_pull_through_the_store(hub, tmp_path, redirect):
    data = blob()
    hub.add(REPO, FILE, data)
    hub.redirect = redirect
    store, expert = open_store(write_catalog(tmp_path / "cat.toml", data, [hub_source()]))
    installed = store.pull(expert)
    assert_pulled(store, expert, data)
    assert installed.sha256 == sha256(data) and installed.size == len(data)
    assert installed.source.startswith(f"Hub {REPO}")
    # A second pull finds it in place and asks the Hub for nothing.
    before = hub.count()
    assert store.pull(expert).path == installed.path
    assert hub.count() == before


def test_hub_pull_through_the_cli_shows_in_list(hub, tmp_path):
    data = blob()
    hub.add(REPO, FILE, data)
    catalog = write_catalog(tmp_path / "cat.toml", data, [hub_source()])
    assert list_row(catalog)["pulled"] is False
    result = complm("pull", NAME, "--catalog", catalog)
    assert result.exit_code == 0, result.output
    store, expert = open_store(catalog)
    assert_pulled(store, expert, data)
    row = list_row(catalog)
    assert row["pulled"] is True
    assert row["size"] == len(data)
    assert row["sha256"] == sha256(data)
    assert row["path"] == str(store.root / NAME / FILE)
    assert row["source"].startswith("Hub ")


# --- (2) a download cut in the middle -------------------------------------------------


@pytest.mark.parametrize("redirect", [False, True], ids=["direct", "cdn-redirect"])
def test_cut_download_fails_then_resumes_with_range(hub, tmp_path, redirect):
    data = blob()
    half = len(data) // 2
    hub.add(REPO, FILE, data)
    hub.redirect = redirect
    hub.cut(HUB_PATH, after=half)
    store, expert = open_store(write_catalog(tmp_path / "cat.toml", data, [hub_source()]))

    with pytest.raises(DownloadError) as info:
        store.pull(expert)
    assert info.value.code == ExitCode.DOWNLOAD
    assert_not_pulled(store, expert)
    assert part_file(store, expert).read_bytes() == data[:half]  # kept, for the resume

    store.pull(expert)
    assert hub.ranges(HUB_PATH) == [f"bytes={half}-"]
    assert_pulled(store, expert, data)


def test_cut_download_through_the_cli_exits_6_then_resumes(hub, tmp_path):
    data = blob()
    hub.add(REPO, FILE, data)
    hub.cut(HUB_PATH, after=100_000)
    catalog = write_catalog(tmp_path / "cat.toml", data, [hub_source()])

    result = complm("pull", NAME, "--catalog", catalog)
    assert result.exit_code == ExitCode.DOWNLOAD, result.output
    assert NAME in one_line(result.stderr)
    store, expert = open_store(catalog)
    assert_not_pulled(store, expert)
    assert list_row(catalog)["pulled"] is False

    result = complm("pull", NAME, "--catalog", catalog)
    assert result.exit_code == 0, result.output
    assert hub.ranges(HUB_PATH) == ["bytes=100000-"]
    assert_pulled(store, expert, data)


def test_cut_download_without_a_pinned_size_is_resumable(hub, tmp_path):
    data = blob()
    hub.add(REPO, FILE, data)
    hub.cut(HUB_PATH, after=100_000)
    store, expert = open_store(write_catalog(tmp_path / "cat.toml", data, [hub_source()], pin_size=False))
    with pytest.raises(DownloadError):
        store.pull(expert)
    assert_not_pulled(store, expert)
    store.pull(expert)
    assert hub.ranges(HUB_PATH) == ["bytes=100000-"]
    assert_pulled(store, expert, data)


def test_complete_partial_without_a_pinned_size_is_installed(hub, tmp_path):
    data = blob()
    hub.add(REPO, FILE, data)
    store, expert = open_store(write_catalog(tmp_path / "cat.toml", data, [hub_source()], pin_size=False))
    # What a pull killed between its last byte and the rename leaves behind.
    part = part_file(store, expert)
    part.parent.mkdir(parents=True)
    part.write_bytes(data)
    store.pull(expert)
    assert_pulled(store, expert, data)


# --- (3) a wrong hash ------------------------------------------------------------------


def test_wrong_bytes_raise_integrity_error_and_leave_nothing(hub, tmp_path):
    data = blob()
    hub.add(REPO, FILE, data)
    hub.serve_wrong(HUB_PATH, blob(seed=2))  # same length, other bytes
    store, expert = open_store(write_catalog(tmp_path / "cat.toml", data, [hub_source()]))
    with pytest.raises(IntegrityError) as info:
        store.pull(expert)
    assert info.value.code == ExitCode.INTEGRITY
    assert NAME in info.value.message and "does not match" in info.value.message
    assert_not_pulled(store, expert)
    assert not part_file(store, expert).exists()


def test_wrong_bytes_through_the_cli_exit_7(hub, tmp_path):
    data = blob()
    hub.add(REPO, FILE, data)
    hub.serve_wrong(HUB_PATH, blob(seed=2))
    catalog = write_catalog(tmp_path / "cat.toml", data, [hub_source()])
    result = complm("pull", NAME, "--catalog", catalog)
    assert result.exit_code == ExitCode.INTEGRITY, result.output
    line = one_line(result.stderr)
    assert NAME in line and "sha256" in line
    store, expert = open_store(catalog)
    assert_not_pulled(store, expert)
    assert not part_file(store, expert).exists()
    assert list_row(catalog)["pulled"] is False
    # A rerun starts over rather than resuming the discarded bytes.
    result = complm("pull", NAME, "--catalog", catalog)
    assert result.exit_code == ExitCode.INTEGRITY
    assert hub.ranges(HUB_PATH) == []


def test_wrong_bytes_from_the_hub_fall_over_to_a_good_mirror(hub, tmp_path):
    data = blob()
    hub.add(REPO, FILE, data)
    hub.serve_wrong(HUB_PATH, blob(seed=2))
    mirror = hub.put("/mirror/tiny.gguf", data)
    catalog = write_catalog(tmp_path / "cat.toml", data, [hub_source(), {"type": "url", "url": hub.url_for(mirror)}])
    store, expert = open_store(catalog)
    installed = store.pull(expert)
    assert installed.source.startswith("URL ")
    assert hub.ranges(mirror) == []  # the discarded Hub bytes were not resumed from
    assert_pulled(store, expert, data)


# --- (4) the Hub unreachable --------------------------------------------------------------


@pytest.mark.parametrize("fallback", ["path", "url"])
@pytest.mark.parametrize("endpoint", ["closed-port", "unresolvable"])
def test_unreachable_hub_falls_over_to_the_next_source(hub, tmp_path, monkeypatch, endpoint, fallback):
    data = blob()
    if fallback == "path":
        local = tmp_path / "local.gguf"
        local.write_bytes(data)
        second = {"type": "path", "path": str(local)}
    else:
        second = {"type": "url", "url": hub.url_for(hub.put("/mirror/tiny.gguf", data))}
    dead = f"http://127.0.0.1:{closed_port()}" if endpoint == "closed-port" else "http://hub.invalid"
    monkeypatch.setenv("HF_ENDPOINT", dead)
    catalog = write_catalog(tmp_path / "cat.toml", data, [hub_source(), second])

    result = complm("pull", NAME, "--catalog", catalog, "--verbose")
    assert result.exit_code == 0, result.output
    # The Hub was tried first and failed, and that failure is what sent the pull on (not a skipped source).
    tried = [line for line in result.stderr.splitlines() if "trying" in line or "failed" in line]
    assert "Hub" in tried[0] and "failed" in tried[1] and "trying the next source" in tried[1], tried
    store, expert = open_store(catalog)
    assert_pulled(store, expert, data)
    assert store.installed(expert).source.startswith("local file" if fallback == "path" else "URL")


def test_unreachable_hub_and_no_other_source_is_a_download_error(tmp_path, monkeypatch):
    data = blob()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    catalog = write_catalog(tmp_path / "cat.toml", data, [hub_source()])
    result = complm("pull", NAME, "--catalog", catalog)
    assert result.exit_code == ExitCode.DOWNLOAD, result.output
    assert "cannot be reached" in one_line(result.stderr)
    assert_not_pulled(*open_store(catalog))


# --- (5) no SHA-256 in the catalog: the Hub's linked etag -------------------------------


@pytest.mark.parametrize("redirect", [False, True], ids=["direct", "cdn-redirect"])
def test_entry_without_sha256_uses_the_hub_linked_etag(hub, tmp_path, redirect):
    data = blob()
    hub.add(REPO, FILE, data)
    hub.redirect = redirect
    store, expert = open_store(write_catalog(tmp_path / "cat.toml", data, [hub_source()], pin_sha=False))
    assert expert.sha256 is None
    store.pull(expert)
    assert hub.count("HEAD", HUB_PATH) >= 1
    assert_pulled(store, expert, data)


def test_entry_without_sha256_rejects_bytes_the_etag_does_not_match(hub, tmp_path):
    data = blob()
    hub.add(REPO, FILE, data, etag=sha256(b"something else"))
    store, expert = open_store(write_catalog(tmp_path / "cat.toml", data, [hub_source()], pin_sha=False))
    with pytest.raises(IntegrityError):
        store.pull(expert)
    assert_not_pulled(store, expert)
    assert not part_file(store, expert).exists()


def test_entry_without_sha256_and_no_etag_is_refused(hub, tmp_path):
    data = blob()
    hub.add(REPO, FILE, data, etag=None)
    catalog = write_catalog(tmp_path / "cat.toml", data, [hub_source()], pin_sha=False)
    result = complm("pull", NAME, "--catalog", catalog)
    assert result.exit_code == ExitCode.DOWNLOAD, result.output
    assert "SHA-256" in one_line(result.stderr)
    assert hub.count("GET", HUB_PATH) == 0
    assert_not_pulled(*open_store(catalog))


# --- (6) offline ----------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["flag", "env"])
def test_offline_never_touches_the_network(hub, tmp_path, monkeypatch, how):
    data = blob()
    hub.add(REPO, FILE, data)
    catalog = write_catalog(tmp_path / "cat.toml", data, [hub_source(), {"type": "url", "url": hub.url_for(hub.put("/m.gguf", data))}])
    args = ["pull", NAME, "--catalog", catalog]
    if how == "flag":
        args.append("--offline")
    else:
        monkeypatch.setenv("COMPLM_OFFLINE", "1")
    result = complm(*args)
    assert result.exit_code == ExitCode.NOT_FOUND, result.output
    line = one_line(result.stderr)
    assert NAME in line and "offline" in line
    assert hub.traffic() == 0
    assert hub.count() == 0
    assert_not_pulled(*open_store(catalog))


def test_offline_store_pull_raises_not_found(hub, tmp_path, monkeypatch):
    data = blob()
    hub.add(REPO, FILE, data)
    monkeypatch.setenv("COMPLM_OFFLINE", "1")
    store, expert = open_store(write_catalog(tmp_path / "cat.toml", data, [hub_source()]))
    with pytest.raises(NotFoundError):
        store.pull(expert)
    assert hub.traffic() == 0


def test_offline_pull_of_a_pulled_model_succeeds_quietly(hub, tmp_path):
    data = blob()
    hub.add(REPO, FILE, data)
    catalog = write_catalog(tmp_path / "cat.toml", data, [hub_source()])
    assert complm("pull", NAME, "--catalog", catalog).exit_code == 0
    before = hub.traffic()
    result = complm("pull", NAME, "--offline", "--catalog", catalog)
    assert result.exit_code == 0, result.output
    assert hub.traffic() == before


def test_offline_pull_uses_a_local_path_source(hub, tmp_path):
    data = blob()
    hub.add(REPO, FILE, data)
    local = tmp_path / "local.gguf"
    local.write_bytes(data)
    catalog = write_catalog(tmp_path / "cat.toml", data, [hub_source(), {"type": "path", "path": str(local)}])
    result = complm("pull", NAME, "--offline", "--catalog", catalog)
    assert result.exit_code == 0, result.output
    assert hub.traffic() == 0
    assert_pulled(*open_store(catalog), data)


# --- (7) two pulls at once ---------------------------------------------------------------


def test_two_concurrent_pulls_share_one_download(hub, tmp_path):
    data = blob()
    hub.add(REPO, FILE, data)
    hub.delay = 0.1  # ~2 s of body, so the second process arrives while the first holds the lock
    catalog = write_catalog(tmp_path / "cat.toml", data, [hub_source()])
    procs = [spawn_pull(catalog), spawn_pull(catalog)]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    store, expert = open_store(catalog)
    assert_pulled(store, expert, data)
    # One process downloaded; the other waited for the lock and found it pulled.
    assert hub.count("GET", HUB_PATH) == 1


# --- (8) kill -9 halfway --------------------------------------------------------------------


def test_kill_9_halfway_leaves_nothing_pulled_and_a_rerun_completes(hub, tmp_path):
    data = blob(2 * 1024 * 1024)  # over one 1 MiB read, so part of it reaches the disk before the kill
    hub.add(REPO, FILE, data)
    hub.delay = 0.02
    catalog = write_catalog(tmp_path / "cat.toml", data, [hub_source()])
    proc = spawn_pull(catalog)
    try:
        deadline = time.monotonic() + 60
        while hub.sent[HUB_PATH] < len(data) * 3 // 4:
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "the download never got going"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    store, expert = open_store(catalog)
    assert_not_pulled(store, expert)
    assert list_row(catalog)["pulled"] is False
    part = part_file(store, expert)
    if part.exists():
        assert data.startswith(part.read_bytes())

    hub.delay = 0
    rerun = spawn_pull(catalog)  # a subprocess, so a lock left held would time out instead of hanging the suite
    _, err = rerun.communicate(timeout=60)
    assert rerun.returncode == 0, err
    assert_pulled(store, expert, data)


# --- (9) not enough disk space ---------------------------------------------------------------


def test_not_enough_disk_space_says_how_much_is_needed(hub, tmp_path, monkeypatch):
    data = blob()
    hub.add(REPO, FILE, data)
    monkeypatch.setattr("complm_cli.cache.store.shutil.disk_usage", lambda path: SimpleNamespace(total=10**6, used=10**6 - 1000, free=1000))
    catalog = write_catalog(tmp_path / "cat.toml", data, [hub_source()])
    result = complm("pull", NAME, "--catalog", catalog)
    assert result.exit_code == ExitCode.DOWNLOAD, result.output
    line = one_line(result.stderr)
    assert "disk space" in line and "free" in line
    needed = re.search(r"needs (\d+(?:\.\d+)? [KMGT]?B)", line)
    assert needed, line
    assert parse_size(needed.group(1)) >= len(data)
    assert hub.count() == 0
    assert_not_pulled(*open_store(catalog))


# --- (10) verify and rm ----------------------------------------------------------------------


def test_a_file_that_cannot_be_read_is_a_source_that_failed_or_a_verify_that_failed(hub, tmp_path, monkeypatch):
    """Root reads anything, so the unreadable file is a patched open: what is checked is the handling."""
    data = blob()
    hub.add(REPO, FILE, data)
    local = tmp_path / "copy.gguf"
    local.write_bytes(data)
    real_open = Path.open

    def refusing_open(self, *args, **kwargs):
        if self == local:
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", refusing_open)
    catalog = write_catalog(tmp_path / "cat.toml", data, [{"type": "path", "path": str(local)}, hub_source()])
    result = complm("pull", NAME, "--catalog", catalog)
    assert result.exit_code == 0, result.output  # on to the next source, not "Cannot write" (exit 10)
    assert hub.count("GET", HUB_PATH) >= 1

    def unreadable(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(sources, "hash_prefix", unreadable)
    result = complm("verify", NAME, "--catalog", catalog)
    assert result.exit_code == ExitCode.INTEGRITY and "cannot be read (Permission denied)" in result.stdout



def test_verify_catches_a_changed_file_and_rm_removes_it(hub, tmp_path):
    data = blob()
    hub.add(REPO, FILE, data)
    catalog = write_catalog(tmp_path / "cat.toml", data, [hub_source()])
    assert complm("pull", NAME, "--catalog", catalog).exit_code == 0
    store, expert = open_store(catalog)

    result = complm("verify", NAME, "--catalog", catalog)
    assert result.exit_code == 0, result.output
    assert f"{NAME}: ok" in result.stdout
    assert complm("verify", "--catalog", catalog).exit_code == 0  # every pulled model

    path = store.path(expert)
    flipped = bytearray(path.read_bytes())
    flipped[len(flipped) // 2] ^= 0xFF
    path.write_bytes(bytes(flipped))
    result = complm("verify", NAME, "--catalog", catalog)
    assert result.exit_code == ExitCode.INTEGRITY, result.output
    assert NAME in one_line(result.stderr)
    result = complm("verify", "--json", "--catalog", catalog)
    assert result.exit_code == ExitCode.INTEGRITY
    assert [r["ok"] for r in json.loads(result.stdout) if r["name"] == NAME] == [False]

    result = complm("rm", NAME, "--catalog", catalog)
    assert result.exit_code == 0, result.output
    assert not store.folder(expert).exists()
    assert list_row(catalog)["pulled"] is False
    assert complm("verify", NAME, "--catalog", catalog).exit_code == ExitCode.NOT_FOUND  # not pulled


# --- (11) the embedder: a folder from the Hub ---------------------------------------------------


EMBED_REPO = "acme/tiny-embedder"
EMBED_FILES = {
    "modules.json": b'[{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}]',
    "config.json": b'{"hidden_size": 8}',
    "model.safetensors": blob(400_000, seed=3),
    "tokenizer.json": b'{"version": "1.0"}',
    "1_Pooling/config.json": b'{"pooling_mode_mean_tokens": true}',
}


def write_embedder_catalog(path: Path, *, pin_sha: bool = True) -> Path:
    check = EMBED_FILES["model.safetensors"]
    lines = [
        '[embedders."tiny-embedder"]',
        'description = "A tiny fake embedder for tests."',
        'dir = "tiny-embedder-dir"',
        'check_file = "model.safetensors"',
        f"size = {len(check)}",
        *([f'sha256 = "{sha256(check)}"'] if pin_sha else []),
        '[[embedders."tiny-embedder".sources]]',
        'type = "hub"',
        f'repo = "{EMBED_REPO}"',
        f"files = {_toml(list(EMBED_FILES))}",
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_embedder_folder_pulled_from_the_hub(hub, tmp_path):
    for name, content in EMBED_FILES.items():
        hub.add(EMBED_REPO, name, content)
    catalog = write_embedder_catalog(tmp_path / "cat.toml")
    result = complm("pull", "tiny-embedder", "--catalog", catalog)
    assert result.exit_code == 0, result.output

    store, expert = open_store(catalog, "tiny-embedder")
    assert expert.kind == "embedder"
    assert store.is_pulled(expert)
    folder = store.path(expert)
    assert folder == store.root / "tiny-embedder" / "tiny-embedder-dir" and folder.is_dir()
    assert {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()} == set(EMBED_FILES)
    for name, content in EMBED_FILES.items():
        assert (folder / name).read_bytes() == content, name
    manifest = json.loads((store.folder(expert) / MANIFEST).read_text())
    assert manifest["sha256"] == sha256(EMBED_FILES["model.safetensors"])
    assert not (store.folder(expert) / ".partial").exists()
    row = list_row(catalog, "tiny-embedder")
    assert row["kind"] == "embedder" and row["pulled"] is True and row["size"] == len(EMBED_FILES["model.safetensors"])
    assert complm("verify", "tiny-embedder", "--catalog", catalog).exit_code == 0
    assert set(manifest["files"]) == set(EMBED_FILES)

    # Any file of the folder, not only the pinned one, is checked by verify.
    (folder / "tokenizer.json").write_bytes(b'{"version": "2.0"}')
    result = complm("verify", "tiny-embedder", "--catalog", catalog)
    assert result.exit_code == ExitCode.INTEGRITY and "tokenizer.json" in result.stdout


def test_embedder_with_a_wrong_check_file_is_discarded(hub, tmp_path):
    for name, content in EMBED_FILES.items():
        hub.add(EMBED_REPO, name, content)
    hub.serve_wrong(HubServer.resolve_path(EMBED_REPO, "model.safetensors"), blob(400_000, seed=4))
    catalog = write_embedder_catalog(tmp_path / "cat.toml")
    result = complm("pull", "tiny-embedder", "--catalog", catalog)
    assert result.exit_code == ExitCode.INTEGRITY, result.output
    store, expert = open_store(catalog, "tiny-embedder")
    assert_not_pulled(store, expert)
    assert not (store.folder(expert) / ".partial" / expert.file).exists()


def test_embedder_without_sha256_checks_the_hub_etag(hub, tmp_path):
    for name, content in EMBED_FILES.items():
        hub.add(EMBED_REPO, name, content)
    hub.serve_wrong(HubServer.resolve_path(EMBED_REPO, "model.safetensors"), blob(400_000, seed=4))
    catalog = write_embedder_catalog(tmp_path / "cat.toml", pin_sha=False)
    result = complm("pull", "tiny-embedder", "--catalog", catalog)
    assert result.exit_code == ExitCode.INTEGRITY, result.output
    assert_not_pulled(*open_store(catalog, "tiny-embedder"))


def test_a_file_left_without_its_manifest_is_re_verified_not_downloaded_again(hub, tmp_path):
    """A pull killed between renaming the file and writing its manifest costs a re-hash, not a download."""
    data = blob()
    hub.add(REPO, FILE, data)
    store, expert = open_store(write_catalog(tmp_path / "cat.toml", data, [hub_source()]))
    store.pull(expert)
    (store.folder(expert) / MANIFEST).unlink()
    assert not store.is_pulled(expert)
    before = hub.count("GET", HUB_PATH)
    store.pull(expert)
    assert_pulled(store, expert, data)
    assert hub.count("GET", HUB_PATH) == before


# --- (12) a source that sends more than the catalog says ------------------------------------


def test_hub_file_larger_than_the_catalog_size_is_not_downloaded(hub, tmp_path):
    data = blob()
    hub.add(REPO, FILE, data + blob(50_000, seed=9))
    catalog = write_catalog(tmp_path / "cat.toml", data, [hub_source()])
    result = complm("pull", NAME, "--catalog", catalog)
    assert result.exit_code == ExitCode.DOWNLOAD, result.output
    line = one_line(result.stderr)
    assert str(len(data)) in line and "resume" not in line
    assert hub.count("GET", HUB_PATH) == 0
    store, expert = open_store(catalog)
    assert_not_pulled(store, expert)
    assert not part_file(store, expert).exists()


@pytest.mark.parametrize("announced", [True, False], ids=["content-length", "no-length"])
def test_url_source_that_sends_more_than_the_catalog_size_is_cut_off(hub, tmp_path, announced):
    data = blob()
    mirror = hub.put("/mirror/tiny.gguf", data + blob(3 * 1024 * 1024, seed=9))
    if not announced:
        hub.omit_length.add(mirror)
    catalog = write_catalog(tmp_path / "cat.toml", data, [{"type": "url", "url": hub.url_for(mirror)}])
    result = complm("pull", NAME, "--catalog", catalog)
    assert result.exit_code == ExitCode.DOWNLOAD, result.output
    line = one_line(result.stderr)
    assert "more than" in line and "resume" not in line
    store, expert = open_store(catalog)
    assert_not_pulled(store, expert)
    assert not part_file(store, expert).exists()  # nothing kept that a rerun would append to


def test_copy_is_capped_at_the_limit(tmp_path):
    import io

    from complm_cli.cache import sources
    from complm_cli.cache.progress import PullProgress

    dest = tmp_path / "out.part"
    with pytest.raises(sources.SourceFailed, match="more than 1000 bytes"):
        sources.copy_hashing([io.BytesIO(b"x" * 5000)], dest, PullProgress(), None, limit=1000)
    assert not dest.exists()


# --- (13) what a user can get wrong around the sources ------------------------------------------


@pytest.mark.parametrize("endpoint", ["huggingface.co", "http://[::1", "http://example.org:port", "ftp://example.org", "https://"])
def test_malformed_hf_endpoint_is_a_clear_usage_error(tmp_path, monkeypatch, endpoint):
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    catalog = write_catalog(tmp_path / "cat.toml", blob(), [hub_source()])
    result = complm("pull", NAME, "--catalog", catalog)
    assert result.exit_code == ExitCode.USAGE, result.output
    assert "HF_ENDPOINT" in one_line(result.stderr)


def test_path_source_that_is_a_folder_says_so(tmp_path):
    folder = tmp_path / "models-here"
    folder.mkdir()
    catalog = write_catalog(tmp_path / "cat.toml", blob(), [{"type": "path", "path": str(folder)}])
    result = complm("pull", NAME, "--catalog", catalog)
    assert result.exit_code == ExitCode.DOWNLOAD, result.output
    line = one_line(result.stderr)
    assert "is a folder" in line and "Check the network" not in line


# --- (14) cache files that parse but have the wrong shape -----------------------------------------


@pytest.mark.parametrize("content", ["null", "[]", '"text"', "{}", '{"sha256": 1}'])
def test_manifest_of_the_wrong_shape_is_reported_or_rebuilt(hub, tmp_path, content):
    data = blob()
    hub.add(REPO, FILE, data)
    catalog = write_catalog(tmp_path / "cat.toml", data, [hub_source()])
    assert complm("pull", NAME, "--catalog", catalog).exit_code == 0
    store, expert = open_store(catalog)
    manifest = store.folder(expert) / MANIFEST
    manifest.write_text(content)

    assert list_row(catalog)["pulled"] is False
    result = complm("verify", NAME, "--catalog", catalog)
    assert result.exit_code == ExitCode.INTEGRITY, result.output
    assert str(manifest) in result.stdout and "Traceback" not in result.output
    result = complm("verify", "--json", "--catalog", catalog)
    assert result.exit_code == ExitCode.INTEGRITY, result.output
    before = hub.count("GET", HUB_PATH)
    assert complm("pull", NAME, "--catalog", catalog).exit_code == 0  # re-hashed in place, not downloaded
    assert hub.count("GET", HUB_PATH) == before
    assert_pulled(store, expert, data)


# --- (15) a cache that cannot be written ----------------------------------------------------------


def _read_only_under(monkeypatch, root: Path, *names: str) -> None:
    """Path methods that write raise EROFS below `root`, as on a read-only mount (root ignores chmod)."""
    import errno
    import pathlib

    for name in names:
        original = getattr(pathlib.Path, name)

        def refuse(self, *args, _original=original, **kwargs):
            if str(self).startswith(str(root)):
                raise OSError(errno.EROFS, "Read-only file system", str(self))
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(pathlib.Path, name, refuse)


def test_read_only_cache_on_pull_is_a_storage_error(hub, tmp_path, monkeypatch, isolated):
    data = blob()
    hub.add(REPO, FILE, data)
    catalog = write_catalog(tmp_path / "cat.toml", data, [hub_source()])
    _read_only_under(monkeypatch, isolated["cache"], "mkdir")
    result = complm("pull", NAME, "--catalog", catalog)
    assert result.exit_code == ExitCode.STORAGE, result.output
    line = one_line(result.stderr)
    assert "Read-only file system" in line and str(isolated["cache"]) in line and "unexpected" not in line


def test_read_only_cache_on_rm_is_a_storage_error(hub, tmp_path, monkeypatch, isolated):
    data = blob()
    hub.add(REPO, FILE, data)
    catalog = write_catalog(tmp_path / "cat.toml", data, [hub_source()])
    assert complm("pull", NAME, "--catalog", catalog).exit_code == 0
    _read_only_under(monkeypatch, isolated["cache"], "unlink", "rmdir")
    result = complm("rm", NAME, "--catalog", catalog)
    assert result.exit_code == ExitCode.STORAGE, result.output
    assert "Read-only file system" in one_line(result.stderr)
    store, expert = open_store(catalog)
    assert store.is_pulled(expert)  # nothing half-removed


def test_rm_that_cannot_remove_the_folder_does_not_say_removed(hub, tmp_path, monkeypatch):
    import errno
    import shutil

    data = blob()
    hub.add(REPO, FILE, data)
    catalog = write_catalog(tmp_path / "cat.toml", data, [hub_source()])
    assert complm("pull", NAME, "--catalog", catalog).exit_code == 0

    def refuse(path, *args, **kwargs):
        raise OSError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(shutil, "rmtree", refuse)
    result = complm("rm", NAME, "--catalog", catalog)
    assert result.exit_code == ExitCode.STORAGE, result.output
    assert f"removed {NAME}" not in result.stderr


# --- (12) what a run lacks is pulled in one place: pipeline.pull_missing -----------------------------------


REMOTE_EXPERT = '''
[experts."far"]
description = "A model on a server that no test here asks."
roles = ["expert"]
default = true
[experts."far".remote]
api_base = "http://127.0.0.1:9/v1"
model_name = "far"
'''


def write_run_catalog(path: Path, data: bytes) -> Path:
    """`tiny` plays every role, `tiny-embedder` routes, and a remote default expert has no file to pull."""
    from complm_cli.cache.catalog import load_catalog

    model = write_catalog(path.with_name("model.toml"), data, [hub_source()]).read_text(encoding="utf-8")
    model = model.replace('roles = ["expert"]', 'roles = ["planner", "aggregator", "fallback", "expert"]\ndefault = true')
    embedder = write_embedder_catalog(path.with_name("embedder.toml")).read_text(encoding="utf-8")
    shipped = "".join(f'[experts."{n}"]\ndefault = false\n' for n in load_catalog().default_names)
    roles = "".join(f'{role} = "{NAME}"\n' for role in ("planner", "aggregator", "fallback"))
    path.write_text('[defaults]\nembedder = "tiny-embedder"\n' + roles + shipped + model + embedder + REMOTE_EXPERT, encoding="utf-8")
    return path


def serve_run_models(hub, tmp_path) -> tuple[Path, bytes]:
    data = blob()
    hub.add(REPO, FILE, data)
    for name, content in EMBED_FILES.items():
        hub.add(EMBED_REPO, name, content)
    return write_run_catalog(tmp_path / "cat.toml", data), data


@pytest.fixture
def pulls(monkeypatch):
    """What was pulled: each Store.pull (model name), and the models each pipeline.pull_missing was given."""
    from complm_cli.compose import session as pipeline

    record = SimpleNamespace(store=[], missing=[])
    real_pull, real_missing = Store.pull, pipeline.pull_missing

    def pull(self, expert, **kwargs):
        record.store.append(expert.name)
        return real_pull(self, expert, **kwargs)

    def pull_missing(store, models, reporter=None):
        record.missing.append([m.name for m in models])
        return real_missing(store, models, reporter)

    monkeypatch.setattr(Store, "pull", pull)
    monkeypatch.setattr(pipeline, "pull_missing", pull_missing)
    return record


class NoEmbedder:
    """Stands in for the embedder of a Session that never routes."""

    def start(self):
        return self

    def close(self) -> None:
        pass


def no_models(*args):
    raise AssertionError("no model is loaded in these tests")


def test_a_session_pulls_what_it_lacks_once_and_nothing_remote(hub, tmp_path, pulls):
    from complm_cli.compose.session import Session
    from complm_cli.cache.progress import PullProgress, PullReporter

    catalog, data = serve_run_models(hub, tmp_path)
    settings = load_settings().replace(catalog=catalog)
    heard = []

    class Recorder(PullReporter):
        def missing(self, experts):
            heard.append(("missing", [m.name for m in experts]))

        def progress(self, expert):
            heard.append(("progress", expert.name))
            return PullProgress()

        def pulled(self, installed):
            heard.append(("pulled", installed.expert.name))

    with Session(settings, pull_reporter=Recorder(), factory=no_models, embedder=NoEmbedder()) as session:
        assert {m.name for m in session.needed()} == {NAME, "tiny-embedder", "far"}
    assert pulls.missing == [[NAME, "far", "tiny-embedder"]]
    assert pulls.store == [NAME, "tiny-embedder"]  # the remote expert has no file
    assert heard == [("missing", [NAME, "tiny-embedder"]), ("progress", NAME), ("pulled", NAME),
                     ("progress", "tiny-embedder"), ("pulled", "tiny-embedder")]
    store, expert = open_store(catalog)
    assert_pulled(store, expert, data)
    asked = hub.count()

    # Everything in the cache: the store is not even asked to pull, the reporter hears nothing.
    heard.clear()
    with Session(settings, pull_reporter=Recorder(), factory=no_models, embedder=NoEmbedder()):
        pass
    assert pulls.store == [NAME, "tiny-embedder"] and heard == []
    assert len(pulls.missing) == 2 and hub.count() == asked


@pytest.mark.parametrize("verbose", [False, True])
def test_the_cli_pulls_through_the_same_function(hub, tmp_path, pulls, verbose):
    """`ask`, `graph` and `eval` prepare their Session alike: each missing model pulled once; quiet when piped."""
    import io

    from complm_cli.cli.common import Environment
    from complm_cli.cli.question import prepare

    catalog, data = serve_run_models(hub, tmp_path)
    err = io.StringIO()
    e = Environment(stdin=io.StringIO(), stdout=io.StringIO(), stderr=err)
    prepare(catalog, False, None, ("parallel",), e, verbose=verbose).close()
    assert pulls.missing == [[NAME, "far", "tiny-embedder"]]  # what the run needs, remote or not
    assert pulls.store == [NAME, "tiny-embedder"]
    assert_pulled(*open_store(catalog), data)
    if verbose:
        assert f"pulling {NAME}, tiny-embedder (first use)" in err.getvalue()
        assert f"pulled {NAME} (" in err.getvalue() and "pulled tiny-embedder (" in err.getvalue()
    else:
        assert err.getvalue() == ""

    # A second run finds both in the cache and pulls nothing.
    prepare(catalog, False, None, ("parallel",), e, verbose=verbose).close()
    assert pulls.store == [NAME, "tiny-embedder"] and len(pulls.missing) == 2


def test_offline_the_library_pulls_nothing_and_names_the_missing_model(hub, tmp_path, pulls):
    from complm_cli.compose.session import ask

    catalog, _ = serve_run_models(hub, tmp_path)
    with pytest.raises(NotFoundError, match=f"'{NAME}' is not pulled"):
        ask("Who wrote Hamlet?", settings=load_settings().replace(catalog=catalog), offline=True)
    assert len(pulls.missing) == 1 and pulls.store == []
    assert hub.traffic() == 0


@pytest.mark.parametrize("expert", ["calculator", "tiny-embedder"])
def test_an_expert_that_cannot_answer_alone_is_refused_before_anything_is_pulled(hub, tmp_path, pulls, expert):
    catalog, _ = serve_run_models(hub, tmp_path)
    result = complm("ask", "What is 2 + 2?", "--expert", expert, "--catalog", catalog)
    assert result.exit_code == ExitCode.USAGE, result.output
    assert expert in one_line(result.stderr)
    assert pulls.store == [] and hub.count() == 0
