"""The error family every user-facing failure belongs to, and the exit codes.

A ComplmError carries one sentence for stderr and the exit code the CLI
returns; the CLI never shows a traceback for one (unless --debug).
"""

from __future__ import annotations

import enum
import errno


class ExitCode(enum.IntEnum):
    OK = 0
    FAILURE = 1  # an unexpected failure (a bug); --debug shows the traceback
    USAGE = 2  # bad flags or arguments, an empty question
    PARTIAL = 3  # an answer was produced, but some nodes failed or were skipped
    NOT_FOUND = 4  # an unknown expert name, or a model that is not pulled (with --offline)
    CATALOG = 5  # a catalog or config file that cannot be read or is invalid
    DOWNLOAD = 6  # every source of a model failed (network, mirror, disk space)
    INTEGRITY = 7  # a size or SHA-256 mismatch, or a pulled file that changed since
    MODEL = 8  # a model failed to load or generate, so no answer could be given
    DATASET = 9  # an evaluation dataset that cannot be read
    STORAGE = 10  # a file or folder complm must write cannot be written (read-only, permissions, full)
    SERVE = 11  # `complm serve` cannot start (no extra, address taken), or `--server` gets no answer from one
    INTERRUPTED = 130  # Ctrl-C


class ComplmError(Exception):
    """A failure the user can act on: `message` is one sentence saying what to do."""

    code: ExitCode = ExitCode.FAILURE

    def __init_subclass__(cls, code: ExitCode | None = None, **kwargs):
        # `class UsageError(ComplmError, code=ExitCode.USAGE)`: each kind of error is one line, its exit code beside it.
        super().__init_subclass__(**kwargs)
        if code is not None:
            cls.code = code

    def __init__(self, message: str, code: ExitCode | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class UsageError(ComplmError, code=ExitCode.USAGE): ...
class NotFoundError(ComplmError, code=ExitCode.NOT_FOUND): ...
class CatalogError(ComplmError, code=ExitCode.CATALOG): ...
class DownloadError(ComplmError, code=ExitCode.DOWNLOAD): ...
class IntegrityError(ComplmError, code=ExitCode.INTEGRITY): ...
class ModelError(ComplmError, code=ExitCode.MODEL): ...
class DatasetError(ComplmError, code=ExitCode.DATASET): ...
class StorageError(ComplmError, code=ExitCode.STORAGE): ...


# The errno values that mean "this cannot be written here", as opposed to a bug.
WRITE_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOTDIR,
                          errno.EISDIR, errno.EEXIST, errno.ENAMETOOLONG, errno.EMLINK, errno.EFBIG})


def storage_error(exc: OSError, lead: str) -> StorageError:
    """One sentence for an OSError met while writing: `lead` says what, e.g. "Cannot write to the model cache"."""
    where = f" {exc.filename}" if exc.filename else ""
    return StorageError(f"{lead}{where}: {exc.strerror or exc}; check that the folder exists, is writable and has free space.")
