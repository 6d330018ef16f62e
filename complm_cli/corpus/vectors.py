"""The dense half of a corpus: a usearch HNSW index of its passages' vectors, keyed by passage id.

The database keeps every vector too (2 bytes a dimension), so the index file
can always be rebuilt from it: a file lost or left from a killed add costs
time, never passages.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from complm_cli.corpus.index import vectors_path


def new_index(dims: int):
    from usearch.index import Index

    return Index(ndim=int(dims), metric="cos", dtype="f16")


def _rebuild(con: sqlite3.Connection):
    import numpy as np

    index = None
    rows = con.execute("SELECT id, vector FROM passages")
    while True:
        chunk = rows.fetchmany(4096)
        if not chunk:
            return index
        vectors = np.stack([np.frombuffer(v, dtype=np.float16) for _, v in chunk])
        if index is None:
            index = new_index(vectors.shape[1])
        index.add(np.asarray([i for i, _ in chunk], dtype=np.uint64), vectors)


def load_for_update(con: sqlite3.Connection, root: Path, generation: int):
    """The index to change in memory: the current generation's file, or one rebuilt from the database."""
    from usearch.index import Index

    if generation == 0:
        return None
    index = Index.restore(str(vectors_path(root, generation)))
    return index if index is not None else _rebuild(con)


def open_for_search(con: sqlite3.Connection, root: Path, generation: int):
    """The index to search: the file mapped into memory (opened in milliseconds), else rebuilt in memory."""
    from usearch.index import Index

    try:
        index = Index.restore(str(vectors_path(root, generation)), view=True)
    except (RuntimeError, ValueError):  # a damaged file: the database has every vector
        index = None
    return index if index is not None else _rebuild(con)
