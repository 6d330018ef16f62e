"""Search over a corpus of 100,000 passages: how long one query takes, and how memory grows while indexing.

The passages are the real paragraphs of bench/data/knowledge (MuSiQue and
HotpotQA, about 3,000), each written 33 times with a number added, so that
BM25's lists are as long as a real 100k corpus's would be. Their vectors are
random unit vectors: an exact search costs the same whatever the vectors say,
and embedding 100,000 passages would take this machine an hour. The queries
are the real tuning questions of both sets, embedded by the real embedder
(that time is printed apart: a step pays it once, routing and retrieval
share it).

Indexing goes through `corpus.build.add` in 4 adds of 25 files (1,000
passages each), and the process's peak memory is printed after each: what
grows is the vector index (2 bytes a dimension a passage), not the text.

    python bench/corpus_search.py > bench/corpus-search-results.txt
"""

from __future__ import annotations

import hashlib
import json
import resource
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent
DATA = ROOT / "data" / "knowledge"
COPIES = 35
PER_FILE = 1000


class RandomVectors:
    """Unit vectors from a text's hash: the same text always gets the same vector."""

    def encode(self, texts):
        out = []
        for t in texts:
            rng = np.random.default_rng(int.from_bytes(hashlib.sha256(t.encode()).digest()[:8], "little"))
            v = rng.standard_normal(384).astype(np.float32)
            out.append(v / np.linalg.norm(v))
        return np.stack(out)


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]


def write_files(folder: Path) -> int:
    base = _jsonl(DATA / "musique_passages.jsonl") + _jsonl(DATA / "hotpotqa_passages.jsonl")
    rows = [{"id": f"{p['id']}-{c}", "title": p.get("title", ""), "text": f"{p['text']} (copy {c})"}
            for c in range(COPIES) for p in base][:100_000]
    for start in range(0, len(rows), PER_FILE):
        with open(folder / f"part{start // PER_FILE:03d}.jsonl", "w", encoding="utf-8") as f:
            for r in rows[start:start + PER_FILE]:
                f.write(json.dumps(r) + "\n")
    return len(rows)


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    from complm_cli.cache.catalog import load_catalog
    from complm_cli.cache.config import load_settings
    from complm_cli.cache.store import Store
    from complm_cli.compose.knowledge import embedder_id
    from complm_cli.compose.route import Embedder
    from complm_cli.corpus import build, index
    from complm_cli.corpus.search import Searcher

    catalog = load_catalog()
    real = Embedder(Store(load_settings()).require(catalog.embedder), catalog.embedder.name)
    questions = [q["question"] for s in ("musique", "hotpotqa") for q in _jsonl(DATA / f"{s}_tune.jsonl")]
    t = time.perf_counter()
    vectors = real.encode(questions)
    embed_ms = (time.perf_counter() - t) / len(questions) * 1000

    with tempfile.TemporaryDirectory() as tmp:
        cache, files = Path(tmp) / "cache", Path(tmp) / "files"
        files.mkdir()
        total = write_files(files)
        parts = sorted(files.glob("*.jsonl"))
        print(f"{total} passages in {len(parts)} files; peak memory before indexing {peak_mib():.0f} MiB")
        quarter = len(parts) // 4 + (len(parts) % 4 > 0)
        for i in range(4):
            stage = Path(tmp) / f"stage{i}"
            stage.mkdir()
            for p in parts[i * quarter:(i + 1) * quarter]:
                p.rename(stage / p.name)
            t = time.perf_counter()
            report = build.add(cache, "big", [stage], RandomVectors(), embedder_id(catalog))
            print(f"  add {i + 1}: {report.added} passages in {time.perf_counter() - t:.1f} s, "
                  f"{report.passages} in all; peak memory {peak_mib():.0f} MiB")
        info = index.info(cache, "big")
        print(f"corpus on disk: {info.size / 2**20:.0f} MiB ({info.passages} passages)")

        t = time.perf_counter()
        searcher = Searcher(cache, "big", embedder_id(catalog))
        open_ms = (time.perf_counter() - t) * 1000
        for q, v in zip(questions[:5], vectors[:5]):  # warm the page cache, as a session's later steps find it
            searcher.search(q, v, 2)
        from complm_cli.corpus.search import CANDIDATES, fts_query, query_words

        times, best, dense, sparse, everything = [], [], [], [], []
        for q, v in zip(questions, vectors):
            t = time.perf_counter()
            searcher.search(q, v, 2)
            times.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            searcher.best(v)
            best.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            searcher.index.search(v, CANDIDATES)
            dense.append((time.perf_counter() - t) * 1000)
            for words, out in ((searcher._rare(query_words(q)), sparse), (query_words(q), everything)):
                t = time.perf_counter()
                searcher.con.execute("SELECT rowid FROM passages_fts WHERE passages_fts MATCH ? ORDER BY "
                                     "bm25(passages_fts, 2.0, 1.0) LIMIT ?", (fts_query(words), CANDIDATES)).fetchall()
                out.append((time.perf_counter() - t) * 1000)
        searcher.close()
    times.sort()
    print(f"\nopen the corpus (read its vector file): {open_ms:.0f} ms")
    print(f"search, {len(times)} queries (BM25 top 20 + exact dense top 20, fused, 2 passages read back):")
    print(f"  median {statistics.median(times):.1f} ms, p95 {times[int(0.95 * len(times)) - 1]:.1f} ms, "
          f"max {times[-1]:.1f} ms (goal: under 50 ms)")
    print(f"  of which dense top 20: median {statistics.median(dense):.1f} ms; BM25 top 20: median "
          f"{statistics.median(sparse):.1f} ms (with every word, common ones too: {statistics.median(everything):.1f} ms)")
    print(f"routing score (closest passage only): median {statistics.median(best):.1f} ms")
    print(f"embedding one query (real embedder, apart from the search): {embed_ms:.1f} ms")


if __name__ == "__main__":
    main()
