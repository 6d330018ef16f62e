"""Where the background server of a user and cache listens, logs and is started: a folder only that user can open."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import stat
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from complm_cli.errors import ComplmError, ExitCode

MAX_SOCKET_PATH = 100  # bytes; sun_path holds 108 on Linux, 104 on macOS


class Unavailable(ComplmError):
    """The background server cannot be had; the run goes on in this process."""

    code = ExitCode.SERVE


def runtime_root() -> Path:
    """$XDG_RUNTIME_DIR/complm (a tmpfs the session owns), else a folder of the user's own in the temp folder."""
    base = os.environ.get("XDG_RUNTIME_DIR", "")
    if base and os.path.isabs(base) and os.path.isdir(base):
        return Path(base) / "complm"
    return Path(tempfile.gettempdir()) / f"complm-{os.getuid()}"


def private_folder(path: Path) -> Path:
    """`path`, made if need be, checked to be a real folder of this user's that no one else can open."""
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700, parents=True)
    try:
        info = os.lstat(path)
    except OSError as exc:
        raise Unavailable(f"The server folder {path} cannot be made ({exc.strerror})") from None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise Unavailable(f"{path} is not a folder of this user's, so no server is started there")
    if info.st_mode & 0o077:
        try:
            os.chmod(path, 0o700)  # our own folder, made by an older umask: close it
        except OSError as exc:
            raise Unavailable(f"The server folder {path} is open to other users and cannot be closed ({exc.strerror})") from None
    return path


@dataclass(frozen=True)
class Place:
    folder: Path
    key: str  # the cache's: one server per user and cache

    @classmethod
    def of(cls, settings) -> "Place":
        key = hashlib.sha256(str(Path(settings.cache_dir).expanduser().resolve()).encode()).hexdigest()[:12]
        place = cls(private_folder(runtime_root()), key)
        if len(os.fsencode(place.socket)) > MAX_SOCKET_PATH:
            raise Unavailable(f"The server's socket path {place.socket} is too long for a Unix socket; "
                              "set XDG_RUNTIME_DIR to a shorter folder")
        return place

    @property
    def socket(self) -> Path:
        return self.folder / f"{self.key}.sock"

    @property
    def log(self) -> Path:
        return self.folder / f"{self.key}.log"

    @property
    def lock_file(self) -> Path:
        return self.folder / f"{self.key}.lock"

    @contextlib.contextmanager
    def starting(self, timeout: float):
        """Held by the one process that checks for a server and starts it: two asks at once start one server."""
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EAGAIN, errno.EACCES) or time.monotonic() > deadline:
                        raise Unavailable("Another complm is starting the server and it is taking too long") from None
                    time.sleep(0.1)
            yield
        finally:
            os.close(fd)  # and with it the lock; a process killed while holding it lets go the same way


def alive(pid: int) -> bool:
    """Whether the process runs: a zombie (exited, not yet reaped by its parent) does not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True
