"""Expert Router: sub-queries go to the expert whose profile is closest by embedding.

An expert's profile is its description (with its domains) and its example
questions, each embedded with the catalog's sentence-transformers model. A
query's score for an expert is half its cosine similarity to the domain line
and half the mean of its top-k similarities to the examples (bench/routing.py
compares this with other rules); below the threshold the query goes to the
fallback expert. Profile vectors are cached on disk, keyed by embedder and text.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from complm_cli.cache.catalog import Expert
from complm_cli.errors import ModelError

TOP_K = 3
RULE = "hybrid"


class Embedder:
    """A sentence-transformers model that can start loading in the background.

    Importing sentence_transformers and torch costs several seconds; `start()`
    overlaps that with planning, and `encode()` waits for it only if needed.
    """

    def __init__(self, path: Path, name: str, threads: int | None = None):
        self.path, self.name, self.threads = path, name, threads
        self._model = None
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._recent: collections.OrderedDict = collections.OrderedDict()  # text -> vector, least recent first

    def start(self) -> "Embedder":
        with self._lock:
            if self._thread is None and self._model is None:
                self._thread = threading.Thread(target=self._load, name="complm-embedder", daemon=True)
                self._thread.start()
        return self

    # Nothing here sets the environment or other process-wide state for good:
    # a program that imports complm keeps its own. The model folder is complete
    # on disk, so local_files_only=True is all it takes to never ask the Hub.
    # Torch's thread count and transformers' progress bars are process-wide,
    # so they are changed only while complm loads or encodes, then put back.

    def _load(self) -> None:
        try:
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as transformers_logging

            bars = transformers_logging.is_progress_bar_enabled()
            transformers_logging.disable_progress_bar()  # "Loading weights" would draw on stderr
            try:
                with self._torch_threads():
                    self._model = SentenceTransformer(str(self.path), device="cpu", local_files_only=True)
            finally:
                if bars:
                    transformers_logging.enable_progress_bar()
        except BaseException as exc:  # reported on first use, in the caller's thread
            self._error = exc

    @contextlib.contextmanager
    def _torch_threads(self):
        """Torch uses `threads` inside the block (llama.cpp's workers want the rest of the CPU)."""
        import torch

        before = torch.get_num_threads()
        change = bool(self.threads) and self.threads != before
        if change:
            torch.set_num_threads(self.threads)
        try:
            yield
        finally:
            if change:
                torch.set_num_threads(before)

    def model(self):
        self.start()
        if self._thread is not None:
            self._thread.join()
        if self._error is not None:
            raise ModelError(f"The embedder {self.name} could not be loaded ({type(self._error).__name__}: {self._error}); try `complm pull --force {self.name}`.")
        return self._model

    def close(self, wait: bool = True) -> None:
        """Let the model go. A load still under way finishes first, then is dropped too, unless `wait` is
        False: a process on its way out (a stopped server) leaves the loading thread, a daemon, behind."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None and wait:
            thread.join()
        self._model = None

    RECENT = 256  # texts whose vectors are kept: a step is embedded to route it, to score it against a corpus,
    # and to retrieve its passages; the second and third time cost nothing

    def encode(self, texts: Sequence[str]):
        import numpy as np

        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        with self._lock:
            recent = self._recent
            known = {t: recent[t] for t in texts if t in recent}
            for t in known:
                recent.move_to_end(t)
        missing = list(dict.fromkeys(t for t in texts if t not in known))
        if missing:
            model = self.model()
            with self._torch_threads():
                vectors = model.encode(missing, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
            with self._lock:
                for t, v in zip(missing, np.asarray(vectors, dtype=np.float32)):
                    known[t] = recent[t] = v
                while len(recent) > self.RECENT:
                    recent.popitem(last=False)
        return np.stack([known[t] for t in texts])


class VectorCache:
    """Embeddings of profile texts on disk, so a catalog's profiles are computed once."""

    def __init__(self, folder: Path, embedder_id: str):
        self.path = folder / f"{embedder_id}.json"
        self._data: dict[str, list[float]] | None = None

    @staticmethod
    def key(text: str) -> str:
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def load(self) -> dict[str, list[float]]:
        if self._data is None:
            try:
                data = json.loads(self.path.read_text())
            except (OSError, ValueError, RecursionError):
                data = {}
            # A file of another shape (cut short, written by hand, another version)
            # is dropped and rebuilt: it only saves time.
            self._data = data if _vectors_of_one_size(data) else {}
        return self._data

    def vectors(self, texts: Sequence[str], embedder: Embedder):
        import numpy as np

        data = self.load()
        missing = [t for t in dict.fromkeys(texts) if self.key(t) not in data]
        if missing:
            for text, vec in zip(missing, embedder.encode(missing)):
                data[self.key(text)] = [round(float(x), 6) for x in vec]
            self._save()
        return np.asarray([data[self.key(t)] for t in texts], dtype=np.float32)

    def _save(self) -> None:
        from complm_cli.cache.config import atomic_write

        try:
            atomic_write(self.path, json.dumps(self._data))
        except OSError:
            pass  # a cache that cannot be written only costs time


def _vectors_of_one_size(data) -> bool:
    if not isinstance(data, dict):
        return False
    sizes = set()
    for vector in data.values():
        if not isinstance(vector, list) or not all(type(x) in (int, float) for x in vector):
            return False
        sizes.add(len(vector))
    return len(sizes) <= 1


@dataclass
class Route:
    expert: str
    score: float  # the chosen expert's score (the best score, even when it fell back)
    scores: dict[str, float] = field(default_factory=dict)  # every candidate's score
    reason: str = "score"  # 'score', 'fallback' (no score passed the threshold), 'competence' (the topic's expert is not trusted by that margin), 'forced' (--expert), 'monolithic', 'calculation'
    formula: str = ""  # for a calculation: what the calculator evaluates, with {N} for earlier answers

    def to_dict(self) -> dict:
        out = {"expert": self.expert, "score": round(self.score, 4), "reason": self.reason,
               "scores": {k: round(v, 4) for k, v in self.scores.items()}}
        if self.formula:
            out["formula"] = self.formula
        return out

    def label(self) -> str:
        """How renderers name the route: the expert and its score, or the formula it computes."""
        if self.formula:
            return f"{self.expert}: {self.formula}"
        why = {"fallback": ", fallback", "competence": ", by competence"}.get(self.reason, "")
        return f"{self.expert} ({self.score:.2f}{why})"


def score_matrix(query_vecs, profile_vecs: list, rule: str = RULE, k: int = TOP_K):
    """Scores (queries x experts) under a scoring rule. Row 0 of each profile is its description.

    'hybrid' (the default): half the similarity to the description, half the mean of the
    top-k similarities to the example questions; bench/routing.py measured it best.
    Also 'topk' (mean of top-k over all rows), 'max', 'centroid' and 'description'.
    """
    import numpy as np

    columns = []
    for vecs in profile_vecs:
        if rule == "hybrid":
            desc = query_vecs @ vecs[0]
            if len(vecs) == 1:
                columns.append(desc)
                continue
            sims = query_vecs @ vecs[1:].T
            kk = min(k, sims.shape[1])
            columns.append(0.5 * desc + 0.5 * np.sort(sims, axis=1)[:, -kk:].mean(axis=1))
            continue
        if rule == "centroid":
            c = vecs.mean(axis=0)
            c = c / (np.linalg.norm(c) or 1.0)
            columns.append(query_vecs @ c)
            continue
        if rule == "description":
            vecs = vecs[:1]
        sims = query_vecs @ vecs.T
        if rule == "max":
            columns.append(sims.max(axis=1))
        else:
            kk = min(k, sims.shape[1])
            columns.append(np.sort(sims, axis=1)[:, -kk:].mean(axis=1))
    return np.stack(columns, axis=1) if columns else np.zeros((len(query_vecs), 0))


class Router:
    def __init__(self, experts: list[Expert], fallback: Expert, embedder: Embedder, cache: VectorCache,
                 threshold: float, rule: str = RULE, k: int = TOP_K, competence: bool = True):
        self.experts, self.fallback, self.embedder, self.cache = experts, fallback, embedder, cache
        self.threshold, self.rule, self.k, self.competence = threshold, rule, k, competence
        self._profiles = None

    def profiles(self):
        if self._profiles is None:
            self._profiles = [self.cache.vectors(list(e.profile_texts), self.embedder) for e in self.experts]
        return self._profiles

    def route(self, questions: Sequence[str]) -> list[Route]:
        if not questions:
            return []
        if not self.experts:
            return [Route(self.fallback.name, 0.0, {}, "fallback") for _ in questions]
        scores = score_matrix(self.embedder.encode(questions), self.profiles(), self.rule, self.k)
        routes = []
        margins = {e.name: e.route_margin for e in self.experts} if self.competence else {}
        for row in scores:
            by_name = {e.name: float(s) for e, s in zip(self.experts, row)}
            best = max(by_name, key=by_name.get)
            if by_name[best] < self.threshold:
                routes.append(Route(self.fallback.name, by_name[best], by_name, "fallback"))
            elif (best != self.fallback.name and self.fallback.name in by_name
                  and by_name[best] - by_name[self.fallback.name] < margins.get(best, 0.0)):
                # On topic, but not clearly enough to trust a model that answers worse than the fallback.
                routes.append(Route(self.fallback.name, by_name[self.fallback.name], by_name, "competence"))
            else:
                routes.append(Route(best, by_name[best], by_name, "score"))
        return routes
