"""A corpus on disk: one SQLite database (passages, their files, an FTS5 table) and a faiss file.

    corpora/NAME/corpus.sqlite          passages with their origin and vector; FTS5 over title and text
    corpora/NAME/vectors-G.faiss        the dense index of generation G (the database names its generation)
    locks/corpus-NAME.lock              one writer at a time, across processes

Why it survives a kill: an update is one SQLite transaction (WAL), and the
vector file of the new generation is written whole, under its own name,
before the transaction that names it commits. Killed before the commit, the
database still names the old generation, whose file is untouched; readers
never see a half-written index. The previous generation's file is kept one
update longer, for a reader that read the old generation just before.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from complm_cli.errors import IntegrityError, NotFoundError, StorageError, UsageError, storage_error

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
DB = "corpus.sqlite"

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files(
    id INTEGER PRIMARY KEY AUTOINCREMENT, path TEXT UNIQUE NOT NULL,
    size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, sha256 TEXT NOT NULL, passages INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS passages(
    id INTEGER PRIMARY KEY AUTOINCREMENT, file_id INTEGER NOT NULL REFERENCES files(id),
    title TEXT NOT NULL, text TEXT NOT NULL, start_line INTEGER NOT NULL, end_line INTEGER NOT NULL,
    record_id TEXT NOT NULL, vector BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS passages_by_file ON passages(file_id);
CREATE VIRTUAL TABLE IF NOT EXISTS passages_fts USING fts5(title, text, content='passages', content_rowid='id');
"""


def is_name(name: str) -> bool:
    """Whether `name` can name a corpus (its folder in the cache, its lock file)."""
    return bool(_NAME.match(name or ""))


def check_name(name: str) -> str:
    if not is_name(name):
        raise UsageError(f"'{name}' is not a corpus name; use letters, digits, '-', '_' and '.' (64 at most), "
                         f"starting with a letter or digit.")
    return name


def corpora_dir(cache_dir: Path) -> Path:
    return cache_dir / "corpora"


def folder(cache_dir: Path, name: str) -> Path:
    return corpora_dir(cache_dir) / check_name(name)


def lock(cache_dir: Path, name: str):
    from filelock import FileLock

    locks = cache_dir / "locks"
    try:
        locks.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise storage_error(exc, "Cannot write to the model cache") from None
    return FileLock(str(locks / f"corpus-{check_name(name)}.lock"))


def connect(path: Path, readonly: bool = False) -> sqlite3.Connection:
    uri = f"file:{path}?mode={'ro' if readonly else 'rwc'}"
    con = sqlite3.connect(uri, uri=True, timeout=30, isolation_level=None, check_same_thread=False)
    if not readonly:
        con.execute("PRAGMA journal_mode=WAL")
        con.executescript(SCHEMA)
    return con


@dataclass(frozen=True)
class Info:
    name: str
    passages: int
    files: int
    size: int  # bytes on disk
    embedder: str
    updated: float  # seconds since the epoch

    def to_dict(self) -> dict:
        return {"name": self.name, "passages": self.passages, "files": self.files, "size": self.size,
                "embedder": self.embedder, "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.updated))}


def read_meta(con: sqlite3.Connection) -> dict[str, str]:
    return dict(con.execute("SELECT key, value FROM meta"))


def check_embedder(name: str, meta: dict[str, str], embedder_id: str) -> None:
    """A corpus's vectors mean something only to the embedder that made them: the writer and the reader both ask."""
    if meta.get("embedder_id") != embedder_id:
        raise IntegrityError(f"The corpus '{name}' was built with another embedder ({meta.get('embedder_id')}) than the "
                             f"one configured now ({embedder_id}); rebuild it: `complm corpus rm {name}`, then add its "
                             f"files again.")


def info(cache_dir: Path, name: str) -> Info | None:
    """What `corpus list` shows; None where no add ever finished (a first add killed midway leaves nothing)."""
    root = folder(cache_dir, name)
    path = root / DB
    if not path.is_file():
        return None
    try:
        with contextlib.closing(connect(path, readonly=True)) as con:
            meta = read_meta(con)
            if "generation" not in meta:
                return None
            passages = con.execute("SELECT count(*) FROM passages").fetchone()[0]
            files = con.execute("SELECT count(*) FROM files").fetchone()[0]
    except sqlite3.DatabaseError:
        return None
    size = sum(p.stat().st_size for p in root.iterdir() if p.is_file())
    return Info(name, passages, files, size, meta.get("embedder", "?"), float(meta.get("updated", 0)))


def names(cache_dir: Path) -> list[str]:
    root = corpora_dir(cache_dir)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and _NAME.match(p.name))


def remove(cache_dir: Path, name: str) -> bool:
    """Delete a corpus whole; False if there is none. Waits for a writer of it to finish first."""
    root = folder(cache_dir, name)
    with lock(cache_dir, name):
        if not root.exists():
            return False
        trash = root.with_name(f".{name}.removing")
        try:
            shutil.rmtree(trash, ignore_errors=True)
            root.rename(trash)  # gone from `list` at once; a kill during the delete leaves no half corpus
            shutil.rmtree(trash)
        except OSError as exc:
            raise storage_error(exc, "Cannot remove the corpus") from None
    return True


def require(cache_dir: Path, name: str) -> Path:
    """The database of an existing corpus, or one sentence saying which corpora there are."""
    if info(cache_dir, name) is None:
        known = ", ".join(n for n in names(cache_dir) if info(cache_dir, n)) or "none yet"
        raise NotFoundError(f"No corpus named '{name}' (known: {known}); create it with `complm corpus add {name} PATH...`.")
    return folder(cache_dir, name) / DB


def vectors_path(root: Path, generation: int) -> Path:
    return root / f"vectors-{generation}.faiss"


def check_writable(root: Path) -> None:
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise storage_error(exc, "Cannot write the corpus") from None
    if not root.is_dir():
        raise StorageError(f"{root} is not a folder; remove it and add the corpus again.")


def remove_unlocked(root: Path) -> None:
    """Delete a corpus folder whose lock the caller holds (a first add that failed)."""
    shutil.rmtree(root, ignore_errors=True)


def verify(cache_dir: Path, name: str) -> tuple[bool, str]:
    """(ok, what is wrong): the database whole, its text index in step with it, its vector file present and
    holding every passage. Under the corpus's lock, so an add under way is waited for, not reported."""
    root = folder(cache_dir, name)
    with lock(cache_dir, name):
        try:
            with contextlib.closing(connect(root / DB)) as con:
                if con.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
                    return False, "the database is damaged; rebuild it: `complm corpus rm`, then add its files again"
                con.execute("INSERT INTO passages_fts(passages_fts) VALUES ('integrity-check')")
                meta = read_meta(con)
                passages = con.execute("SELECT count(*) FROM passages").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            return False, f"the database cannot be read ({exc}); rebuild it: `complm corpus rm`, then add its files again"
        if "generation" not in meta:
            return False, "no add of it finished; add its files again"
        from complm_cli.corpus.vectors import Vectors

        vectors = vectors_path(root, int(meta["generation"]))
        index = Vectors.load(vectors)
        if index is None or len(index) != passages:
            return False, (f"its vector file {vectors.name} is missing or out of step ({passages} passages); "
                           f"add any file to it again to rebuild it, or searches rebuild it in memory each time")
    return True, f"ok ({passages} passages)"
