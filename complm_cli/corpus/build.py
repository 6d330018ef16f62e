"""`corpus add`: index files into a corpus, incrementally, as one transaction under the corpus's lock.

A file whose size and modification time are as recorded is not read again;
one whose bytes are unchanged (same SHA-256) is not embedded again. Passages
are embedded and written in batches, so memory does not grow with the
corpus's text (the vector index, at 2 bytes a dimension, is what stays).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from complm_cli.corpus import index as store
from complm_cli.corpus.read import Found, Passage, SourceFile, decode, digest, find_files, passages, read_bytes
from complm_cli.errors import DatasetError, storage_error

BATCH = 32  # passages embedded at once


@dataclass
class Report:
    name: str
    indexed: int = 0  # files read and embedded (new or changed)
    unchanged: int = 0
    removed: int = 0  # files indexed before, now gone from a folder that was given again
    added: int = 0  # passages embedded now
    passages: int = 0  # in the corpus after the add
    skipped: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"name": self.name, "files_indexed": self.indexed, "files_unchanged": self.unchanged,
                "files_removed": self.removed, "passages_added": self.added, "passages": self.passages,
                "skipped": self.skipped, "seconds": round(self.seconds, 2)}


OnFile = Callable[[Path, int], None]  # (file, passages it gave), after each file


def add(cache_dir: Path, name: str, paths: list[Path], embedder, embedder_id: str,
        on_start: Callable[[int], None] | None = None, on_file: OnFile | None = None) -> Report:
    """Add (or refresh) `paths` in corpus `name`; `embedder` has encode(texts) -> unit vectors."""
    start = time.perf_counter()
    found = find_files(paths)
    root = store.folder(cache_dir, name)
    with store.lock(cache_dir, name):
        store.check_writable(root)
        try:
            con = store.connect(root / store.DB)
        except sqlite3.Error as exc:
            raise DatasetError(f"The corpus '{name}' cannot be opened ({exc}); remove it with `complm corpus rm {name}`.") from None
        new = False
        try:
            meta = store.read_meta(con)
            new = "generation" not in meta
            if not new:
                store.check_embedder(name, meta, embedder_id)
            report = _update(con, root, name, found, paths, embedder, embedder_id, meta, on_start, on_file)
        except BaseException:
            con.close()
            if new:  # a first add that failed leaves no corpus behind
                store.remove_unlocked(root)
            raise
        con.close()
    report.skipped = dict(found.skipped)
    report.seconds = time.perf_counter() - start
    return report


def _update(con, root: Path, name: str, found: Found, given: list[Path], embedder, embedder_id: str, meta: dict,
            on_start, on_file) -> Report:
    generation = int(meta.get("generation", 0))
    report = Report(name)
    writer = _Writer(con, root, generation, embedder)
    next_file = store.vectors_path(root, generation + 1)
    con.execute("BEGIN IMMEDIATE")
    try:
        known = {row[1]: row for row in con.execute("SELECT id, path, size, mtime_ns, sha256 FROM files")}
        if on_start:
            on_start(len(found.files))
        for source in found.files:
            count = _one_file(writer, source, known.get(str(source.path)), report, found)
            if on_file:
                on_file(source.path, count)
        report.removed = _drop_missing(writer, known, found, given)
        report.passages = con.execute("SELECT count(*) FROM passages").fetchone()[0]
        if report.passages == 0:
            raise DatasetError(f"No passages found in {', '.join(str(p) for p in given)}: complm reads .txt, .md and "
                               f".jsonl files with text in them.")
        if meta and not (report.indexed or report.removed or writer.dropped or writer.rebuilt):
            con.execute("COMMIT")  # nothing new: the same generation (a changed time may have been recorded)
            return report
        writer.save(next_file)
        now = {"generation": str(generation + 1), "embedder": embedder_id.split("@")[0], "embedder_id": embedder_id,
               "dims": str(writer.dims), "updated": str(time.time()), **({} if meta else {"created": str(time.time())})}
        con.executemany("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", now.items())
        con.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            con.execute("ROLLBACK")
        with contextlib.suppress(OSError):
            next_file.unlink()
        raise
    for old in root.glob("vectors-*"):  # keep the one a reader may have just opened
        if old.name not in (next_file.name, store.vectors_path(root, generation).name):
            with contextlib.suppress(OSError):
                old.unlink()
    return report


def _one_file(writer: "_Writer", source: SourceFile, known: tuple | None, report: Report, found: Found) -> int:
    if known and known[2] == source.size and known[3] == source.mtime_ns:
        report.unchanged += 1
        return 0
    data = read_bytes(source.path)
    sha = digest(data)
    if known and known[4] == sha:
        writer.con.execute("UPDATE files SET size = ?, mtime_ns = ? WHERE id = ?", (len(data), source.mtime_ns, known[0]))
        report.unchanged += 1
        return 0
    text = decode(data)
    if known:
        writer.drop_file(known[0])
    if text is None:
        found.skip("binary")
        return 0
    cur = writer.con.execute("INSERT INTO files(path, size, mtime_ns, sha256, passages) VALUES (?, ?, ?, ?, 0)",
                             (str(source.path), len(data), source.mtime_ns, sha))
    count = writer.add(cur.lastrowid, passages(source.path, text))
    writer.con.execute("UPDATE files SET passages = ? WHERE id = ?", (count, cur.lastrowid))
    report.indexed += 1
    report.added += count
    return count


def _drop_missing(writer: "_Writer", known: dict, found: Found, given: list[Path]) -> int:
    """Files indexed before from a folder given again, which that folder no longer holds."""
    present = {str(f.path) for f in found.files}
    paths = [Path(os.path.expanduser(str(p))).resolve() for p in given]
    folders = [str(p) for p in paths if p.is_dir()]
    gone = [row for path, row in known.items() if path not in present
            and any(path.startswith(f.rstrip(os.sep) + os.sep) for f in folders)]
    for row in gone:
        writer.drop_file(row[0])
    return len(gone)


class _Writer:
    """Passages into the database and the vector index, a batch at a time."""

    def __init__(self, con: sqlite3.Connection, root: Path, generation: int, embedder):
        from complm_cli.corpus.vectors import load_for_update

        self.con, self.embedder = con, embedder
        self.dropped = 0  # files whose passages were taken out (changed to binary, or gone)
        self.index, self.rebuilt = load_for_update(con, root, generation)
        self.dims = self.index.dims if self.index is not None else 0

    def add(self, file_id: int, items) -> int:
        count = 0
        batch: list[Passage] = []
        for passage in items:
            batch.append(passage)
            if len(batch) == BATCH:
                count += self._write(file_id, batch)
                batch = []
        if batch:
            count += self._write(file_id, batch)
        return count

    def _write(self, file_id: int, batch: list[Passage]) -> int:
        import numpy as np

        from complm_cli.corpus.vectors import Vectors

        vectors = self.embedder.encode([embedded_text(p.title, p.text) for p in batch]).astype(np.float16)
        if self.index is None:
            self.index = Vectors.new(vectors.shape[1])
            self.dims = vectors.shape[1]
        ids = []
        for p, v in zip(batch, vectors):
            cur = self.con.execute(
                "INSERT INTO passages(file_id, title, text, start_line, end_line, record_id, vector) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (file_id, p.title, p.text, p.start_line, p.end_line, p.record_id, v.tobytes()))
            self.con.execute("INSERT INTO passages_fts(rowid, title, text) VALUES (?, ?, ?)", (cur.lastrowid, p.title, p.text))
            ids.append(cur.lastrowid)
        self.index.add(ids, vectors)
        return len(batch)

    def drop_file(self, file_id: int) -> None:

        rows = self.con.execute("SELECT id, title, text FROM passages WHERE file_id = ?", (file_id,)).fetchall()
        self.con.executemany("INSERT INTO passages_fts(passages_fts, rowid, title, text) VALUES ('delete', ?, ?, ?)", rows)
        self.con.execute("DELETE FROM passages WHERE file_id = ?", (file_id,))
        self.con.execute("DELETE FROM files WHERE id = ?", (file_id,))
        self.dropped += 1
        if rows and self.index is not None:
            self.index.remove([r[0] for r in rows])

    def save(self, path: Path) -> None:
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            self.index.save(tmp)
            os.replace(tmp, path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise storage_error(exc, "Cannot write the corpus") from None


def embedded_text(title: str, text: str) -> str:
    """What the embedder reads for a passage: its title says what the passage is about."""
    return f"{title}: {text}" if title else text
