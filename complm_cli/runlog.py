"""The run log: every `complm ask` in a SQLite database in the user's data folder, as simonw/llm's logs.db.

One row a run: when, the question, mode, status, answer, wall time, the
complm version, the model files that answered (name, file, SHA-256; a remote
expert's endpoint and model name, never its key) and the whole `--json`
record, plan, routes and every node's answer and timing in it. Logging is on
unless `complm logs off` (a `logs-off` file in the config folder) or
`--no-log`; a log that cannot be written costs the run a warning, never its
answer.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from complm_cli.errors import StorageError

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    started REAL NOT NULL,
    question TEXT NOT NULL,
    mode TEXT NOT NULL,
    status TEXT NOT NULL,
    answer TEXT,
    wall_s REAL,
    version TEXT NOT NULL,
    server TEXT,
    models TEXT NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_started ON runs(started);
"""


def path(settings) -> Path:
    return settings.data_dir / "logs.db"


def _off_file(settings) -> Path:
    return settings.config_dir / "logs-off"


def is_on(settings) -> bool:
    return not _off_file(settings).exists()


def set_on(settings, on: bool) -> None:
    marker = _off_file(settings)
    try:
        if on:
            marker.unlink(missing_ok=True)
        else:
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
    except OSError as exc:
        raise StorageError(f"Cannot {'remove' if on else 'write'} {marker} ({exc.strerror}).") from None


@dataclass
class Run:
    id: int
    started: float
    question: str
    mode: str
    status: str
    answer: str | None
    wall_s: float | None
    version: str
    server: str | None
    models: list[dict]
    record: dict | None = None  # only when one run is asked for in full

    def to_dict(self) -> dict:
        out = {"id": self.id, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started)),
               "question": self.question, "mode": self.mode, "status": self.status, "answer": self.answer,
               "wall_s": self.wall_s, "version": self.version, "server": self.server, "models": self.models}
        if self.record is not None:
            out["record"] = self.record
        return out


def models_of(result, catalog) -> list[dict]:
    """What answered: each expert the run used, with its file and hash (or its endpoint), no secret."""
    out = []
    for name in result.experts:
        e = catalog.experts.get(name) if catalog is not None else None
        if e is None:
            out.append({"name": name})
        elif e.kind == "corpus":
            out.append({"name": name, "corpus": e.corpus})
        elif e.remote is not None:
            out.append({"name": name, "api_base": public(e.remote.api_base), "model": e.remote.model_name})
        else:
            out.append({"name": name, "file": e.file or None, "sha256": e.sha256})
    return out


def public(url: str | None) -> str | None:
    """A URL without any user name or password in it."""
    if not url:
        return url
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else ""))) \
        if parts.hostname and "@" in parts.netloc else url


def _connect(settings, create: bool) -> sqlite3.Connection:
    db = path(settings)
    if create:
        db.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(db if create else f"file:{db}?mode=ro", uri=not create, timeout=10)
    if create:
        con.executescript(SCHEMA)
    return con


def record(settings, result, catalog=None, server: str | None = None) -> int:
    """Log one run; its id. StorageError (one sentence) when the log cannot be written."""
    from complm_cli import __version__

    row = (time.time(), result.question, result.mode, result.status, result.answer, result.timings.get("wall_s"),
           __version__, public(server), json.dumps(models_of(result, catalog)), json.dumps(result.to_dict(), ensure_ascii=False))
    try:
        with contextlib.closing(_connect(settings, create=True)) as con, con:
            cur = con.execute("INSERT INTO runs(started, question, mode, status, answer, wall_s, version, server, models, "
                              "record) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row)
            return cur.lastrowid
    except (sqlite3.Error, OSError) as exc:
        raise StorageError(f"The run was not logged: {path(settings)} cannot be written ({exc}); "
                           f"move it away to start a new log, or `complm logs off`.") from None


def runs(settings, limit: int = 10, query: str | None = None) -> list[Run]:
    """The last `limit` runs, newest first; with `query`, those whose question or answer holds it."""
    if not path(settings).exists():
        return []
    where, args = "", []
    if query:
        where, args = "WHERE question LIKE ? ESCAPE '\\' OR answer LIKE ? ESCAPE '\\'", [_like(query)] * 2
    return [_run(r) for r in _read(settings, f"SELECT id, started, question, mode, status, answer, wall_s, version, "
                                            f"server, models FROM runs {where} ORDER BY id DESC LIMIT ?", [*args, limit])]


def run(settings, run_id: int) -> Run | None:
    if not path(settings).exists():
        return None
    rows = _read(settings, "SELECT id, started, question, mode, status, answer, wall_s, version, server, models, record "
                           "FROM runs WHERE id = ?", [run_id])
    return _run(rows[0]) if rows else None


def _read(settings, sql: str, args: list) -> list[tuple]:
    try:
        with contextlib.closing(_connect(settings, create=False)) as con:
            return con.execute(sql, args).fetchall()
    except sqlite3.Error as exc:
        raise StorageError(f"The run log {path(settings)} cannot be read ({exc}); move it away to start a new one.") from None


def _run(row: tuple) -> Run:
    return Run(*row[:9], models=json.loads(row[9]), record=json.loads(row[10]) if len(row) > 10 else None)


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"
