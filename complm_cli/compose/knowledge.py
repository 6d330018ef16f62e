"""Knowledge experts: a plan step answered from the user's documents, with its sources.

A corpus (complm_cli/corpus) becomes an expert of kind 'corpus', from the
catalog (`kind = "corpus"`) or for one run (`--corpus NAME`). Its routing
profile is its passages: a step's score for it is its similarity to the
closest passage, and a step at or above the threshold goes to it (measured
by bench/corpus_routing.py). Its node retrieves the step's passages (hybrid
search) and a reader model answers from those only; a reader that finds
nothing says "Not in the corpus.", and the node keeps no sources.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

from complm_cli.cache.catalog import Catalog, Expert
from complm_cli.compose import prompts
from complm_cli.corpus.search import Hit, Searcher

STEP_K = 2  # passages a step's reader gets: one hop needs one, the other catches a near miss (prompt tokens are the cost)
WHOLE_K = 4  # passages for a whole question (monolithic mode): its 2 to 4 hops need several
THRESHOLD = 0.40  # measured by bench/corpus_routing.py: 96% of steps a corpus answers taken, 95% of others left out
FLOOR = 0.1  # a passage less similar than this to its query is not given to the reader, nor shown as a source


def read_answer(answer: str, hits: list[Hit]) -> tuple[str, list[Hit], bool]:
    """(answer, sources, not found) of a reader's answer from `hits`: one that says the passages do not hold
    it (or had none to read) becomes "Not in the corpus." and keeps no sources."""
    if not hits or prompts.says_not_found(answer):
        return prompts.NOT_IN_CORPUS, [], True
    return answer, hits, False


def embedder_id(catalog: Catalog) -> str:
    """What a corpus records of the embedder that indexed it: a different one makes its vectors meaningless."""
    emb = catalog.embedder
    return f"{emb.name}@{(emb.sha256 or '')[:12]}"


def corpus_expert(name: str, catalog: Catalog) -> Expert:
    """The expert a `--corpus NAME` adds for one run: the catalog's entry for that corpus, if there is one."""
    for e in catalog.experts.values():
        if e.kind == "corpus" and e.corpus == name:
            return e
    taken = name in catalog.experts
    return Expert(name=f"corpus-{name}" if taken else name, description=f"Passages of the corpus '{name}'.", file="",
                  sources=(), kind="corpus", roles=("expert",), corpus=name, reader=catalog.for_role("fallback").name)


def with_corpora(catalog: Catalog, names: list[str]) -> Catalog:
    """The catalog with an expert for each corpus named for this run (the catalog's own corpus experts stay)."""
    experts = dict(catalog.experts)
    for name in dict.fromkeys(names):
        e = corpus_expert(name, catalog)
        experts[e.name] = e
    return replace(catalog, experts=experts)


class Knowledge:
    """The corpora of a session, opened once, searched by many node threads."""

    def __init__(self, cache_dir: Path, catalog: Catalog, embedder):
        self.catalog, self.embedder = catalog, embedder
        self.experts = [e for e in catalog.experts.values() if e.kind == "corpus"]
        self.cache_dir, self.embedder_id = cache_dir, embedder_id(catalog)
        self._searchers: dict[str, Searcher] = {}
        self._lock = threading.Lock()
        for e in self.experts:  # an unknown corpus, or one of another embedder: said before anything runs
            self.searcher(e.corpus)

    def __bool__(self) -> bool:
        return bool(self.experts)

    def searcher(self, name: str) -> Searcher:
        with self._lock:
            if name not in self._searchers:
                self._searchers[name] = Searcher(self.cache_dir, name, self.embedder_id)
            return self._searchers[name]

    def reader(self, expert: Expert) -> Expert:
        return self.catalog.get(expert.reader) if expert.reader else self.catalog.for_role("fallback")

    def scores(self, vectors) -> list[dict[str, float]]:
        """Each query's routing score for each corpus expert: its similarity to the closest passage."""
        return [{e.name: self.searcher(e.corpus).best(v) for e in self.experts} for v in vectors]

    def threshold(self, expert: Expert) -> float:
        return expert.threshold if expert.threshold is not None else THRESHOLD

    def retrieve(self, expert: Expert, question: str, k: int = STEP_K) -> list[Hit]:
        vector = self.embedder.encode([question])[0]
        return [h for h in self.searcher(expert.corpus).search(question, vector, k) if h.score >= FLOOR]

    def retrieve_all(self, question: str, k: int = WHOLE_K) -> list[Hit]:
        """The best `k` passages of every corpus for a whole question (monolithic mode), by similarity."""
        vector = self.embedder.encode([question])[0]
        hits = [h for e in self.experts for h in self.searcher(e.corpus).search(question, vector, k) if h.score >= FLOOR]
        if len(self.experts) == 1:
            return hits  # one corpus: keep its fused order
        return sorted(hits, key=lambda h: -h.score)[:k]

    def close(self) -> None:
        for s in self._searchers.values():
            s.close()
