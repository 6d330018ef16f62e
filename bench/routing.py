#!/usr/bin/env python3
"""Routing accuracy of complm's Expert Router on catalogs with many domain experts.

Builds a catalog of one profile per domain from part of a labelled set and
reports top-1 routing accuracy on the rest, for each scoring rule of
`complm_cli.compose.route.score_matrix` and several exemplar counts:

  1. MMLU dev (57 subjects x 5 questions) grouped into 14 MMLU-Pro-style
     domains (13 named ones plus 'other'), then again with only the 13 named
     ones ('other' and its subjects left out). Repeated random splits: per
     subject 2 questions are test, 3 form the exemplar pool.
  2. LLMRouter train queries, one profile per task_name (13 tasks). A fixed
     held-out test set (50 per task); the exemplars are drawn several times
     from the remaining queries.

A profile is built the way complm builds one (`Expert.profile_texts`): a
one-line description written here, then the exemplar questions. The rules see
the description too, as vector 0 of every profile, just as in the router;
'description' uses that vector alone. Each text is embedded once.

    COMPLM_CACHE_DIR=/tmp/cc python3 bench/routing.py [--data DIR] [--seed 0]
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# --- MMLU: subjects -> MMLU-Pro-style domains ---------------------------------------------
# The mapping MMLU-Pro uses for the MMLU subjects it took over (its `src` field), except
# moral_scenarios, which MMLU-Pro does not use; it is put under philosophy (ethics) here.
MMLU_DOMAINS: dict[str, list[str]] = {
    "biology": ["college_biology", "high_school_biology"],
    "business": ["business_ethics", "management", "marketing"],
    "chemistry": ["college_chemistry", "high_school_chemistry"],
    "computer science": ["college_computer_science", "computer_security", "high_school_computer_science", "machine_learning"],
    "economics": ["econometrics", "high_school_macroeconomics", "high_school_microeconomics"],
    "engineering": ["electrical_engineering"],
    "health": ["anatomy", "clinical_knowledge", "college_medicine", "human_aging", "medical_genetics", "nutrition",
               "professional_medicine", "virology"],
    "history": ["high_school_european_history", "high_school_us_history", "high_school_world_history", "prehistory"],
    "law": ["international_law", "jurisprudence", "professional_law"],
    "math": ["abstract_algebra", "college_mathematics", "elementary_mathematics", "high_school_mathematics",
             "high_school_statistics"],
    "philosophy": ["formal_logic", "logical_fallacies", "moral_disputes", "moral_scenarios", "philosophy", "world_religions"],
    "physics": ["astronomy", "college_physics", "conceptual_physics", "high_school_physics"],
    "psychology": ["high_school_psychology", "professional_psychology"],
    "other": ["global_facts", "high_school_geography", "high_school_government_and_politics", "human_sexuality",
              "miscellaneous", "professional_accounting", "public_relations", "security_studies", "sociology",
              "us_foreign_policy"],
}

MMLU_DESCRIPTIONS: dict[str, str] = {
    "biology": "Biology expert: cells, genetics and heredity, evolution, ecology, and how plants and animals live and function.",
    "business": "Business expert: management, marketing, business ethics, companies, customers, employees and organizations.",
    "chemistry": "Chemistry expert: atoms, molecules, chemical reactions and bonds, acids and bases, solutions and lab chemistry.",
    "computer science": "Computer science expert: algorithms, programming, data structures, computer systems, machine learning and security.",
    "economics": "Economics expert: markets, supply and demand, prices, GDP, inflation, monetary and fiscal policy, and econometrics.",
    "engineering": "Electrical engineering expert: circuits, voltage and current, electronics, motors and machines, signals and power.",
    "health": "Health and medicine expert: anatomy, diseases and symptoms, clinical practice, drugs, nutrition, aging and viruses.",
    "history": "History expert: past events, wars, revolutions, empires, and US, European and world history since prehistory.",
    "law": "Law expert: legal rules, contracts, torts, criminal and constitutional law, evidence, court cases and international law.",
    "math": "Mathematics expert: arithmetic, algebra, calculus, equations, groups and rings, probability and statistics.",
    "philosophy": "Philosophy expert: ethics and morality, logic and fallacies, philosophers and their arguments, and world religions.",
    "physics": "Physics expert: motion and forces, energy, electricity and magnetism, waves, quantum physics and astronomy.",
    "psychology": "Psychology expert: the mind and behaviour, memory and learning, child development, mental disorders and therapy.",
    "other": "General knowledge expert: geography, government and politics, sociology, public relations, accounting, foreign policy and world facts.",
}

# --- LLMRouter: one expert per task_name -------------------------------------------------
LLMROUTER_DESCRIPTIONS: dict[str, str] = {
    "agentverse-logicgrid": "Logic grid puzzles: people in a row of houses with different attributes, a list of clues, and deducing who has what.",
    "agentverse-mgsm": "Grade-school math word problems (MGSM) solved step by step, with the final answer in a box.",
    "commongen": "Generative commonsense: given a list of concept words, write a sentence that uses them all.",
    "natural_qa": "Open-domain factual questions as typed into a search engine: who sings, who played, when was, where is.",
    "trivia_qa": "Trivia quiz questions about history, geography, entertainment, sport, science and general knowledge.",
    "mmlu": "Multiple-choice exam questions across academic subjects, including reading comprehension of a passage.",
    "mbpp": "Basic Python programming: write a function from a one-sentence description of the task.",
    "human_eval": "Python code completion: implement a function from its signature and docstring with examples.",
    "gsm8k": "Grade-school math word problems about everyday quantities, solved in a few arithmetic steps.",
    "commonsense_qa": "Everyday commonsense questions: where things are found, why people do things, what happens next.",
    "math": "Competition mathematics: algebra, number theory, geometry, counting and probability, precalculus.",
    "openbook_qa": "Elementary science facts about nature, energy, animals and plants, often a sentence to complete.",
    "arc_challenge": "Grade-school science exam questions on earth science, physics, biology and experiments.",
}

RULES: list[tuple[str, str, int]] = [  # (label, rule, k)
    ("description only", "description", 1),
    ("max (= topk k=1)", "max", 1),
    ("topk k=3", "topk", 3),
    ("topk k=5", "topk", 5),
    ("centroid", "centroid", 1),
    ("hybrid k=3 (default)", "hybrid", 3),
]


def fail(message: str, code: int = 2) -> None:
    print(f"bench/routing.py: {message}", file=sys.stderr)
    raise SystemExit(code)


# --- data ----------------------------------------------------------------------------------------

def read_mmlu(folder: Path, with_choices: bool = False) -> dict[str, list[str]]:
    """subject -> its dev questions: the question text as a user would ask it, or with its four choices."""
    subjects = {}
    for subject in (s for subs in MMLU_DOMAINS.values() for s in subs):
        path = folder / f"{subject}_dev.csv"
        if not path.is_file():
            fail(f"{path} is missing; the MMLU dev set is expected under <data>/mmlu_dev/dev/.")
        with path.open(newline="", encoding="utf-8") as f:
            subjects[subject] = [
                "\n".join([row["question"].strip()] + ([f"{'ABCD'[i]}. {row[f'choice{i}']}" for i in range(4)] if with_choices else []))
                for row in csv.DictReader(f)
            ]
        if not subjects[subject]:
            fail(f"{path} has no questions.")
    return subjects


def read_llmrouter(path: Path) -> dict[str, list[str]]:
    """task_name -> its queries, in file order (read line by line: some queries hold U+2028)."""
    tasks: dict[str, list[str]] = defaultdict(list)
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                tasks[row["task_name"]].append(row["query"].strip())
            except (ValueError, KeyError, AttributeError) as exc:
                fail(f"{path}, line {n}: not a {{task_name, query}} JSON row ({exc}).")
    return dict(tasks)


# --- embedding -------------------------------------------------------------------------------------

class Vectors:
    """Every text embedded once with complm's Embedder; lookups come from memory."""

    def __init__(self, embedder):
        self.embedder = embedder
        self.cache: dict[str, object] = {}
        self.encode_s = 0.0

    def add(self, texts) -> None:
        missing = list(dict.fromkeys(t for t in texts if t not in self.cache))
        if missing:
            t0 = time.perf_counter()
            for text, vec in zip(missing, self.embedder.encode(missing)):
                self.cache[text] = vec
            self.encode_s += time.perf_counter() - t0

    def __call__(self, texts):
        import numpy as np

        return np.stack([self.cache[t] for t in texts])


def load_embedder(threads: int | None):
    from complm_cli.cache.catalog import catalog_for
    from complm_cli.cache.config import load_settings
    from complm_cli.errors import ComplmError
    from complm_cli.compose.route import Embedder
    from complm_cli.cache.store import Store

    try:
        settings = load_settings()
        catalog = catalog_for(settings)
        store = Store(settings)
        store.pull(catalog.embedder)
        embedder = Embedder(store.path(catalog.embedder), catalog.embedder.name, threads=threads)
        embedder.model()
    except ComplmError as exc:
        fail(f"cannot load the embedder: {exc.message}", 1)
    return embedder, catalog.embedder.name


def profile_texts(name: str, description: str, exemplars: list[str]) -> tuple[str, ...]:
    """A profile laid out exactly as the router lays out an expert's (description first)."""
    from complm_cli.cache.catalog import Expert

    return Expert(name=name, description=description, file="", sources=(), examples=tuple(exemplars)).profile_texts


# --- evaluation ----------------------------------------------------------------------------------------

def evaluate(vectors: Vectors, names: list[str], profiles: list[tuple[str, ...]], test: list[tuple[str, str]]):
    """{rule label: (correct, [(true, predicted), ...])} for one catalog and test set."""
    from complm_cli.compose.route import score_matrix

    profile_vecs = [vectors(list(p)) for p in profiles]
    query_vecs = vectors([q for q, _ in test])
    index = {n: i for i, n in enumerate(names)}
    gold = [index[label] for _, label in test]
    out = {}
    for label, rule, k in RULES:
        pred = score_matrix(query_vecs, profile_vecs, rule, k).argmax(axis=1)
        pairs = [(names[g], names[p]) for g, p in zip(gold, pred)]
        out[label] = (sum(g == p for g, p in zip(gold, pred)), pairs)
    return out


class Grid:
    """Accuracies per (rule, exemplar count), over repeated draws."""

    def __init__(self, counts: list[str]):
        self.counts = counts
        self.acc: dict[tuple[str, str], list[float]] = defaultdict(list)
        self.pairs: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)

    def add(self, count: str, results, n_test: int) -> None:
        for label, (correct, pairs) in results.items():
            self.acc[(label, count)].append(correct / n_test)
            self.pairs[(label, count)].extend(pairs)

    def mean(self, key) -> float:
        vals = self.acc[key]
        return sum(vals) / len(vals)

    def sd(self, key) -> float:
        vals, m = self.acc[key], self.mean(key)
        return (sum((v - m) ** 2 for v in vals) / max(len(vals) - 1, 1)) ** 0.5

    def print(self, header: str) -> tuple[str, str]:
        width = max(len(c) for c in self.counts) + 10
        print(f"  {'rule':<18}" + "".join(f"{c:>{width}}" for c in self.counts))
        for label, _, _ in RULES:
            cells = "".join(f"{self.mean((label, c)):>{width - 7}.3f} ±{self.sd((label, c)):.3f}" for c in self.counts)
            print(f"  {label:<18}{cells}")
        print(f"  ({header}; mean ± sd over draws; 'description only' ignores the exemplars)")
        # the best cell (a rule that uses exemplars); on a tie the earlier rule, then the fewer exemplars, wins
        best = max(((label, c) for label, _, _ in RULES if label != "description only" for c in self.counts),
                   key=lambda key: round(self.mean(key), 6))
        return best

    def confusion(self, key, top: int = 3) -> None:
        pairs = self.pairs[key]
        wrong = Counter(tuple(sorted(p)) for p in pairs if p[0] != p[1])
        directed = Counter(p for p in pairs if p[0] != p[1])
        total = Counter(t for t, _ in pairs)
        right = Counter(t for t, p in pairs if t == p)
        errors = sum(wrong.values())
        print(f"  confusions with the best cell, {key[0]} at {key[1]} ({errors} errors in {len(pairs)} test routes over all draws):")
        for (a, b), n in wrong.most_common(top):
            print(f"    {a} <-> {b}: {n} ({a} -> {b} {directed[(a, b)]}, {b} -> {a} {directed[(b, a)]})")
        recall = sorted(total, key=lambda d: right[d] / total[d])
        print("  per-domain top-1, worst first: " + ", ".join(f"{d} {right[d] / total[d]:.2f}" for d in recall))


# --- experiments -----------------------------------------------------------------------------------------

def run_mmlu(vectors: Vectors, subjects: dict[str, list[str]], domains: dict[str, list[str]], title: str, seed: int,
             draws: int, test_per_subject: int, counts: list[int]) -> None:
    names = list(domains)
    used = {s: subjects[s] for subs in domains.values() for s in subs}
    vectors.add([q for qs in used.values() for q in qs] + [MMLU_DESCRIPTIONS[n] for n in names])
    labels = [f"K={k}" for k in counts] + ["all"]
    grid = Grid(labels)
    pool_sizes: dict[str, int] = {}
    n_test = 0
    for d in range(draws):
        rng = random.Random(seed * 1000 + d)
        test, pools = [], {}
        for domain, subs in domains.items():
            per_subject = []
            for s in subs:
                qs = subjects[s][:]
                rng.shuffle(qs)
                test += [(q, domain) for q in qs[:test_per_subject]]
                per_subject.append(qs[test_per_subject:])
            rng.shuffle(per_subject)
            # round-robin over the subjects, so a small K still covers as many subjects as it can
            pools[domain] = [q for rnd in zip_longest_lists(per_subject) for q in rnd]
            pool_sizes[domain] = len(pools[domain])
        n_test = len(test)
        for k, label in zip(counts + [None], labels):
            profiles = [profile_texts(n, MMLU_DESCRIPTIONS[n], pools[n][:k]) for n in names]
            grid.add(label, evaluate(vectors, names, profiles, test), n_test)
    pool_text = ", ".join(f"{n} {pool_sizes[n]}" for n in names)
    print(f"\n== MMLU dev, {title}: {len(names)} domains from {len(used)} subjects; {n_test} test questions per draw "
          f"({test_per_subject} per subject), {draws} random splits (seed {seed})")
    print(f"   K = exemplars per domain, taken round-robin over its subjects from the pool of each subject's "
          f"other questions; 'all' = the whole pool ({pool_text})")
    best = grid.print(f"{len(names)} domains, {n_test} test questions x {draws} splits")
    grid.confusion(best)


def zip_longest_lists(lists: list[list[str]]):
    for i in range(max((len(x) for x in lists), default=0)):
        yield [x[i] for x in lists if i < len(x)]


def run_llmrouter(vectors: Vectors, tasks: dict[str, list[str]], seed: int, draws: int, test_per_task: int,
                  counts: list[int]) -> None:
    names = sorted(tasks)
    missing = [n for n in names if n not in LLMROUTER_DESCRIPTIONS]
    if missing:
        fail(f"no description for task(s) {', '.join(missing)}; add them to LLMROUTER_DESCRIPTIONS.")
    rng = random.Random(seed)
    test, pools = [], {}
    for n in names:
        qs = list(dict.fromkeys(tasks[n]))  # a query repeated in the file must not be both test and exemplar
        rng.shuffle(qs)
        if len(qs) < test_per_task + max(counts):
            fail(f"task {n} has {len(qs)} distinct queries; need {test_per_task} test + {max(counts)} exemplars.")
        test += [(q, n) for q in qs[:test_per_task]]
        pools[n] = qs[test_per_task:]
    test_set = {q for q, _ in test}
    for n in names:  # the same text under two tasks: keep it out of the exemplars
        pools[n] = [q for q in pools[n] if q not in test_set]
    draws_of = []
    for d in range(draws):
        r = random.Random(seed * 1000 + 1 + d)
        draws_of.append({n: r.sample(pools[n], max(counts)) for n in names})
    vectors.add([q for q, _ in test] + [LLMROUTER_DESCRIPTIONS[n] for n in names]
                + [q for dr in draws_of for qs in dr.values() for q in qs])
    labels = [f"N={k}" for k in counts]
    grid = Grid(labels)
    for dr in draws_of:
        for k, label in zip(counts, labels):  # nested: the N=5 exemplars are the first 5 of the N=10 ones
            profiles = [profile_texts(n, LLMROUTER_DESCRIPTIONS[n], dr[n][:k]) for n in names]
            grid.add(label, evaluate(vectors, names, profiles, test), len(test))
    total = sum(len(v) for v in tasks.values())
    print(f"\n== LLMRouter train: {len(names)} tasks, {total} queries; a fixed test set of {len(test)} "
          f"({test_per_task} per task, seed {seed}); N exemplars per task drawn {draws} times from the rest")
    best = grid.print(f"{len(names)} domains, {len(test)} test queries, {draws} exemplar draws")
    grid.confusion(best)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"the shared data folder (default {DEFAULT_DATA})")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", choices=("mmlu", "llmrouter"), help="run one experiment")
    ap.add_argument("--mmlu-splits", type=int, default=10, help="random MMLU splits (default 10)")
    ap.add_argument("--mmlu-test", type=int, default=2, choices=(1, 2, 3, 4), help="test questions per subject (default 2)")
    ap.add_argument("--with-choices", action="store_true", help="MMLU: embed each question with its four choices")
    ap.add_argument("--router-draws", type=int, default=5, help="exemplar draws for LLMRouter (default 5)")
    ap.add_argument("--router-test", type=int, default=50, help="test queries per task (default 50)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads for the embedder (default: torch's choice)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()

    data = args.data.expanduser().resolve()
    mmlu_dir = data / "mmlu_dev" / "dev"
    router_file = data / "llmrouter_train" / "default_query_train.jsonl"
    want_mmlu, want_router = args.only in (None, "mmlu"), args.only in (None, "llmrouter")
    if not data.is_dir():
        fail(f"the data folder {data} does not exist; pass --data DIR (the folder holding mmlu_dev/ and llmrouter_train/).")
    if want_mmlu and not mmlu_dir.is_dir():
        fail(f"{mmlu_dir} does not exist; pass --data DIR, or --only llmrouter.")
    if want_router and not router_file.is_file():
        fail(f"{router_file} does not exist; pass --data DIR, or --only mmlu.")
    subjects = read_mmlu(mmlu_dir, args.with_choices) if want_mmlu else {}
    tasks = read_llmrouter(router_file) if want_router else {}

    embedder, embedder_name = load_embedder(args.threads)
    import torch

    print(f"complm routing bench: embedder {embedder_name}, data {data}, seed {args.seed}, "
          f"torch threads {torch.get_num_threads()}; model loaded in {time.perf_counter() - t0:.1f} s")
    vectors = Vectors(embedder)
    if want_mmlu:
        text = "question and choices" if args.with_choices else "question text only"
        mmlu = (args.seed, args.mmlu_splits, args.mmlu_test, [1, 3, 5, 10])
        run_mmlu(vectors, subjects, MMLU_DOMAINS, f"all 57 subjects, 'other' included, {text}", *mmlu)
        named = {d: subs for d, subs in MMLU_DOMAINS.items() if d != "other"}
        run_mmlu(vectors, subjects, named, f"the 13 named domains ('other' and its subjects left out), {text}", *mmlu)
    if want_router:
        run_llmrouter(vectors, tasks, args.seed, args.router_draws, args.router_test, [5, 10, 20])
    print(f"\n{len(vectors.cache)} texts embedded once each in {vectors.encode_s:.1f} s; "
          f"total runtime {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
