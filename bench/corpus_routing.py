"""The corpus routing threshold, measured: which steps a corpus should take.

A step goes to a corpus when its similarity to the corpus's closest passage
is at least the threshold (compose/knowledge.py). Steps that belong there:
the first-hop sub-questions of MuSiQue's tuning questions (each answered by a
passage of the corpus; later hops name "#1" and are left out) and HotpotQA's
tuning questions. Steps that do not: GSM8K word problems, MMLU dev questions
and complm's sample questions, asked of the same corpora. The threshold
printed is the one that sorts most steps right (both kinds weighted equally);
only tuning questions are used.

    python bench/knowledge_data.py && complm corpus add bench-musique ... (see bench/knowledge.py)
    python bench/corpus_routing.py > bench/corpus-routing-results.txt
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent
DATA = ROOT.parents[1] / "shared" / "data"


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]


def outside(n: int = 60) -> list[str]:
    gsm = [r["question"] for r in _jsonl(DATA / "gsm8k_train" / "train.jsonl")[:n]]
    mmlu = []
    for f in sorted((DATA / "mmlu_dev" / "dev").glob("*.csv")):
        with open(f, encoding="utf-8") as fh:
            mmlu += [row["question"] for row in csv.DictReader(fh)][:1]
    sample = [r["question"] for r in _jsonl(ROOT.parent / "complm_cli" / "data" / "sample.jsonl")]
    return gsm + mmlu[:n] + sample


def main() -> None:
    from complm_cli.cache.catalog import catalog_for
    from complm_cli.cache.config import load_settings
    from complm_cli.cache.store import Store
    from complm_cli.compose.knowledge import embedder_id
    from complm_cli.compose.route import Embedder
    from complm_cli.corpus.search import Searcher

    settings = load_settings()
    catalog = catalog_for(settings)
    embedder = Embedder(Store(settings).require(catalog.embedder), catalog.embedder.name)
    data = ROOT / "data" / "knowledge"
    inside = {
        "musique": [s for q in _jsonl(data / "musique_tune.jsonl") for s in q["steps"] if "#" not in s],
        "hotpotqa": [q["question"] for q in _jsonl(data / "hotpotqa_tune.jsonl")],
    }
    other = outside()
    pos, neg = [], []
    for name, steps in inside.items():
        searcher = Searcher(settings.cache_dir, f"bench-{name}", embedder_id(catalog))
        pos += [searcher.best(v) for v in embedder.encode(steps)]
        neg += [searcher.best(v) for v in embedder.encode(other)]
    pos, neg = np.array(pos), np.array(neg)
    print(f"steps a corpus answers: {len(pos)} (MuSiQue first hops, HotpotQA questions); others: {len(neg)} "
          f"(GSM8K, MMLU, sample), each against both corpora")
    print(f"closest-passage similarity, inside: median {np.median(pos):.3f}, 10th pct {np.percentile(pos, 10):.3f}")
    print(f"closest-passage similarity, outside: median {np.median(neg):.3f}, 90th pct {np.percentile(neg, 90):.3f}")
    best = max(np.arange(0.1, 0.8, 0.01), key=lambda t: (pos >= t).mean() + (neg < t).mean())
    print("threshold  inside taken  outside kept out")
    for t in sorted({round(x, 2) for x in (0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, float(best))}):
        print(f"{t:9.2f}  {(pos >= t).mean():12.0%}  {(neg < t).mean():16.0%}")
    print(f"best balanced threshold: {best:.2f}")


if __name__ == "__main__":
    main()
