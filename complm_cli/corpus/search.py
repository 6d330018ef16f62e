"""Hybrid retrieval over one corpus: BM25 (SQLite FTS5) and dense vectors (faiss), fused by rank.

Reciprocal rank fusion (Cormack et al. 2009) adds 1/(60 + rank) from each
list: no score of one kind has to be scaled to the other, and a passage both
find comes first. BM25 catches names and rare words the small embedder
blurs; the vectors catch paraphrase.
"""

from __future__ import annotations

import contextlib
import re
import threading
from dataclasses import dataclass
from pathlib import Path

from complm_cli.corpus import index as store
from complm_cli.errors import DatasetError

CANDIDATES = 20  # from each list, before fusion
RRF_K = 60
# BM25 scores every passage that holds any query word: a word in thousands of passages costs the most and, by
# its low IDF, moves the ranking least. Such words are left out (bench/corpus_search.py: 100k passages).
COMMON_SHARE, COMMON_MIN = 0.02, 500
_STOP = frozenset(
    "a an and are as at be by did do does for from had has have he her his how in is it its of on or she that the "
    "their them they this to was were what when where which who whom whose why will with".split())


@dataclass(frozen=True)
class Hit:
    corpus: str
    id: int
    title: str
    text: str
    file: str
    start_line: int
    end_line: int
    record_id: str
    score: float  # cosine similarity of the passage to the query

    def where(self) -> str:
        """Where a reader finds the passage: file and lines, or file and JSONL id."""
        name = Path(self.file).name
        if self.record_id:
            return f"{name} #{self.record_id}"
        return f"{name}:{self.start_line}" if self.start_line == self.end_line else f"{name}:{self.start_line}-{self.end_line}"

    @classmethod
    def from_source(cls, data: dict) -> "Hit":
        """A source as `--json` and the server write it (no text) back into a Hit."""
        lines = data.get("lines") or [0, 0]
        return cls(data["corpus"], int(data["passage"]), data.get("title", ""), "", data["file"], int(lines[0]),
                   int(lines[1]), str(data.get("id", "")), float(data["score"]))

    def to_source(self) -> dict:
        out = {"corpus": self.corpus, "passage": self.id, "file": self.file, "title": self.title,
               "score": round(self.score, 4)}
        if self.record_id:
            out["id"] = self.record_id
        else:
            out["lines"] = [self.start_line, self.end_line]
        return out


def query_words(text: str) -> list[str]:
    """The words of a question BM25 looks for: no stop words, no single letters, each once."""
    return list(dict.fromkeys(w for w in re.findall(r"\w+", text.lower()) if len(w) > 1 and w not in _STOP))


def fts_query(words: list[str]) -> str:
    """Words as an FTS5 query any of them matches (quoted: no word is read as syntax)."""
    return " OR ".join(f'"{w}"' for w in words)


class Searcher:
    """One corpus opened for reading; safe to share between node threads."""

    def __init__(self, cache_dir: Path, name: str, embedder_id: str):
        from complm_cli.corpus.vectors import open_for_search

        self.name = name
        db = store.require(cache_dir, name)
        try:
            self.con = store.connect(db, readonly=True)
            meta = store.read_meta(self.con)
        except Exception as exc:  # sqlite3.DatabaseError: a damaged file
            raise DatasetError(f"The corpus '{name}' cannot be read ({exc}); rebuild it: `complm corpus rm {name}`, "
                               f"then add its files again.") from None
        store.check_embedder(name, meta, embedder_id)
        self.index = open_for_search(self.con, db.parent, int(meta["generation"]))
        self.con.execute("CREATE VIRTUAL TABLE temp.vocab USING fts5vocab(main, 'passages_fts', 'row')")
        passages = self.con.execute("SELECT count(*) FROM passages").fetchone()[0]
        self.common = max(COMMON_MIN, int(COMMON_SHARE * passages))
        self._lock = threading.Lock()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.con.close()

    def best(self, vector) -> float:
        """The query's similarity to its closest passage: the corpus's routing score."""
        if self.index is None:
            return 0.0
        with self._lock:
            matches = self.index.search(vector, 1)
        return matches[0][1] if matches else 0.0

    def _rare(self, words: list[str]) -> list[str]:
        """The query words BM25 should look for: those not in a great many passages (the three rarest, if all are)."""
        if not words:
            return words
        found = dict(self.con.execute(f"SELECT term, doc FROM temp.vocab WHERE term IN ({','.join('?' * len(words))})", words))
        kept = [w for w in words if found.get(w, 0) <= self.common]
        return kept or sorted(words, key=lambda w: found.get(w, 0))[:3]

    def search(self, text: str, vector, k: int) -> list[Hit]:
        import numpy as np

        with self._lock:
            dense_ids = [pid for pid, _ in self.index.search(vector, CANDIDATES)] if self.index is not None else []
            query = fts_query(self._rare(query_words(text)))
            sparse_ids = [r[0] for r in self.con.execute(
                "SELECT rowid FROM passages_fts WHERE passages_fts MATCH ? ORDER BY bm25(passages_fts, 2.0, 1.0) LIMIT ?",
                (query, CANDIDATES))] if query else []
            fused: dict[int, float] = {}
            for ranked in (dense_ids, sparse_ids):
                for rank, pid in enumerate(ranked, start=1):
                    fused[pid] = fused.get(pid, 0.0) + 1.0 / (RRF_K + rank)
            top = sorted(fused, key=lambda pid: -fused[pid])[:k]
            rows = {r[0]: r for r in self.con.execute(
                f"SELECT p.id, p.title, p.text, f.path, p.start_line, p.end_line, p.record_id, p.vector "
                f"FROM passages p JOIN files f ON f.id = p.file_id WHERE p.id IN ({','.join('?' * len(top))})", top)}
        q = np.asarray(vector, dtype=np.float32)
        hits = []
        for pid in top:
            r = rows.get(pid)
            if r is None:  # the index of a generation a writer has since replaced: skip the passage it dropped
                continue
            score = float(np.frombuffer(r[7], dtype=np.float16).astype(np.float32) @ q)
            hits.append(Hit(self.name, pid, r[1], r[2], r[3], r[4], r[5], r[6], score))
        return hits
