"""What a background server is: its complm and the settings that shape how its models run.

A client compares the server's with its own before it asks; where they
differ, it replaces the server and says why. The build id changes with any
edit of complm's code, so a server left from an older install, or from
before an edit of a checkout, is replaced too, not only one of another version.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

from complm_cli import __version__

# Settings that are the client's alone, or sent with each request: not the server's identity.
_CLIENT_SIDE = {"config_dir", "data_dir", "catalog", "corpora", "daemon", "keep_alive", "hub_timeout"}


def build_id() -> str:
    """The version and a digest of the package's files (names, sizes, times): cheap, and changes with any edit."""
    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        info = path.stat()
        digest.update(f"{path.relative_to(root)}|{info.st_size}|{info.st_mtime_ns};".encode())
    return f"{__version__}+{digest.hexdigest()[:12]}"


def options(settings, catalog) -> dict:
    """The settings a server's models run with, in JSON's types; the catalog as a digest of its files' text."""
    out = {}
    for f in dataclasses.fields(settings):
        if f.name in _CLIENT_SIDE:
            continue
        value = getattr(settings, f.name)
        out[f.name] = str(value) if isinstance(value, Path) else value
    out["max_memory"] = settings.memory_budget()
    out["workers"] = settings.worker_count()
    digest = hashlib.sha256()
    for path in catalog.files:
        digest.update(str(path).encode() + b"\0" + Path(path).read_bytes() + b"\0")
    out["catalog"] = digest.hexdigest()[:16]
    return out


_SHOWN = {"threads": "--threads", "gpu_layers": "--gpu-layers", "max_memory": "--max-memory", "workers": "--workers",
          "node_timeout": "--timeout", "seed": "--seed", "votes": "--votes", "offline": "--offline", "catalog": "the catalog"}


def _word(value) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):  # before the numbers: True == 1
        return "on" if value else "off"
    return str(value)


def differences(theirs: dict, ours: dict) -> list[str]:
    """What differs between a server's options and this run's, in words: ['--threads 1 (it runs with 2)']."""
    from complm_cli.cache.config import format_size

    out = []
    for name in sorted(set(theirs) | set(ours)):
        if theirs.get(name) == ours.get(name):
            continue
        label = _SHOWN.get(name, name)
        if name == "catalog":
            out.append("the catalog (it was changed)")
        elif name == "max_memory":
            out.append(f"{label} {format_size(ours.get(name) or 0)} (it runs with {format_size(theirs.get(name) or 0)})")
        else:
            out.append(f"{label} {_word(ours.get(name))} (it runs with {_word(theirs.get(name))})")
    return out
