"""The dense half of a corpus: a faiss index of its passages' vectors, keyed by passage id.

Exact inner-product search over half-precision vectors (the embedder's are of
unit length, so the product is the cosine): 100,000 passages answer in a few
tens of milliseconds on two cores (bench/corpus_search.py), and nothing
approximate can miss a passage. faiss rather than usearch: usearch's module
carries its own C++ runtime, whose locale tables clash with llama.cpp's in
one process (llama.cpp then fails to load some models' vocabularies).

The database keeps every vector too (2 bytes a dimension), so the index file
can always be rebuilt from it: a file lost or left from a killed add costs
time, never passages.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from complm_cli.corpus.index import vectors_path


class Vectors:
    """Passage vectors by passage id: add, remove, search, save."""

    def __init__(self, index):
        self.index = index

    @classmethod
    def new(cls, dims: int) -> "Vectors":
        import faiss

        flat = faiss.IndexScalarQuantizer(int(dims), faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
        return cls(faiss.IndexIDMap2(flat))

    @property
    def dims(self) -> int:
        return self.index.d

    def __len__(self) -> int:
        return self.index.ntotal

    def add(self, ids, vectors) -> None:
        import numpy as np

        self.index.add_with_ids(np.asarray(vectors, dtype=np.float32), np.asarray(ids, dtype=np.int64))

    def remove(self, ids) -> None:
        import numpy as np

        self.index.remove_ids(np.asarray(ids, dtype=np.int64))

    def search(self, vector, k: int) -> list[tuple[int, float]]:
        """The `k` closest passages to one query vector: (passage id, cosine similarity), closest first."""
        import numpy as np

        if self.index.ntotal == 0:
            return []
        scores, ids = self.index.search(np.asarray(vector, dtype=np.float32).reshape(1, -1), k)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]

    def save(self, path: Path) -> None:
        import faiss

        faiss.write_index(self.index, str(path))

    @classmethod
    def load(cls, path: Path) -> "Vectors | None":
        """The index in a file; None when it is missing or damaged."""
        import faiss

        if not path.is_file():
            return None
        try:
            return cls(faiss.read_index(str(path)))
        except RuntimeError:
            return None


def _rebuild(con: sqlite3.Connection) -> Vectors | None:
    import numpy as np

    index = None
    rows = con.execute("SELECT id, vector FROM passages")
    while True:
        chunk = rows.fetchmany(4096)
        if not chunk:
            return index
        vectors = np.stack([np.frombuffer(v, dtype=np.float16) for _, v in chunk])
        if index is None:
            index = Vectors.new(vectors.shape[1])
        index.add([i for i, _ in chunk], vectors)


def load_for_update(con: sqlite3.Connection, root: Path, generation: int) -> tuple[Vectors | None, bool]:
    """The index to change in memory, and whether it had to be rebuilt from the database (its file was
    missing or damaged: the add then writes a new one even if no file changed)."""
    if generation == 0:
        return None, False
    index = Vectors.load(vectors_path(root, generation))
    return (index, False) if index is not None else (_rebuild(con), True)


def open_for_search(con: sqlite3.Connection, root: Path, generation: int) -> Vectors | None:
    """The index to search: the generation's file, else one rebuilt in memory from the database."""
    return Vectors.load(vectors_path(root, generation)) or _rebuild(con)
