"""What guessing copied words saves (complm_cli/drafts.py; the engine checks every guess).

    python bench/drafts.py [--n 40] [--runs 3]

Part 1, planning. Each question is planned with guesses off, then on, in one
process with the prompt caches warm. Per set: the median plan seconds off and
on and their ratio, how many plans' steps differ, and the share of guessed
tokens the model kept. Sets: the 12 questions of bench/latency.py (the
drafter's rules were written looking at their plans), and sets never looked at
while writing them: bench/data/twopart.jsonl, the first --n questions of
MuSiQue and of HotpotQA 11-100 (bench/compose.py), and --n questions of the
GSM8K held-out draw from the 41st on (a first run printed how the first 40
split into clauses, which changed the clause rules, so those 40 are no longer
unseen).

Part 2, whole runs. `ask` in parallel mode on the latency questions, guesses
off against on, median of --runs, where dependent steps and the aggregator
also copy earlier answers.

A plan can differ in words: a guess is checked in one multi-token step, and
llama.cpp's batch kernels round their sums differently from one-token steps,
so where two tokens are nearly tied the greedy pick may change.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
GSM8K_SEEN = 40  # the first questions of the GSM8K held-out draw, whose clause splits were read


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=40, help="questions from each held-out set")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--skip-plans", action="store_true", help="only the whole runs")
    parser.add_argument("--skip-runs", action="store_true", help="only the planning table")
    opts = parser.parse_args()

    sys.path.insert(0, str(HERE))
    from compose import build_sets
    from latency import QUESTIONS

    from complm_cli.experts import engine
    from complm_cli.cache.config import load_settings
    from complm_cli.compose.session import Session

    counts = {"kept": 0, "guessed": 0}
    check = engine.Engine._check

    def counted(self, slot, index, guess):  # the engine's own check, counted
        before = slot.sequence.accepted
        check(self, slot, index, guess)
        counts["kept"] += slot.sequence.accepted - before
        counts["guessed"] += len(guess)

    engine.Engine._check = counted

    settings = load_settings()
    off, on = settings.replace(draft=False), settings.replace(draft=True)
    session = Session(settings, modes=("parallel",))
    print(f"complm drafts bench: threads {settings.threads}, planner {session.planner.name}")
    session.ask("What is 2 plus 2, and what is the capital of France?", mode="parallel")  # loads the models
    for expert in session.routable:
        if expert.kind == "llm" and expert.remote is None:
            session.pool.release(session.pool.acquire(expert))

    if not opts.skip_plans:
        paths = build_sets(Path(tempfile.gettempdir()) / "complm-bench-sets")
        sets = {"latency (seen)": [q for _, q in QUESTIONS],
                "twopart": [json.loads(x)["question"] for x in open(HERE / "data" / "twopart.jsonl", encoding="utf-8")]}
        for name, start in (("gsm8k", GSM8K_SEEN), ("musique", 0), ("hotpotqa", 0)):
            with open(paths[name], encoding="utf-8") as f:
                sets[name] = [json.loads(x)["question"] for x in f][start : start + opts.n]
        print("\nplanning, guesses off against on (one process, caches warm)")
        print(f"{'set':<16}{'n':>4}{'off s':>8}{'on s':>8}{'off/on':>8}{'differ':>8}{'kept':>8}")
        for name, questions in sets.items():
            a, b, differ = [], [], 0
            counts.update(kept=0, guessed=0)
            for q in questions:
                session.settings = off
                t = time.perf_counter(); p0 = session.plan(q); a.append(time.perf_counter() - t)
                session.settings = on
                t = time.perf_counter(); p1 = session.plan(q); b.append(time.perf_counter() - t)
                differ += [(n.question, n.depends_on) for n in p0.nodes] != [(n.question, n.depends_on) for n in p1.nodes]
            kept = counts["kept"] / counts["guessed"] if counts["guessed"] else float("nan")
            print(f"{name:<16}{len(questions):>4}{statistics.median(a):>8.2f}{statistics.median(b):>8.2f}"
                  f"{statistics.median(x / y for x, y in zip(a, b)):>8.2f}{differ:>8}{kept:>8.0%}", flush=True)

    if opts.skip_runs:
        session.close()
        return
    print(f"\nwhole runs (ask, parallel), guesses off against on, median of {opts.runs}")
    print(f"{'shape':<9}{'question':<52}{'off s':>7}{'on s':>7}{'off/on':>8}")
    ratios = []
    for shape, q in QUESTIONS:
        times = {False: [], True: []}
        for _ in range(opts.runs):
            for draft in (False, True):
                session.settings = on if draft else off
                t = time.perf_counter(); session.ask(q, mode="parallel"); times[draft].append(time.perf_counter() - t)
        a, b = statistics.median(times[False]), statistics.median(times[True])
        ratios.append((shape, a / b))
        print(f"{shape:<9}{q[:50] + ('…' if len(q) > 50 else ''):<52}{a:>7.2f}{b:>7.2f}{a / b:>8.2f}", flush=True)
    for shape in ("fan-out", "compare", "chain"):
        print(f"median off/on, {shape}: {statistics.median(r for s, r in ratios if s == shape):.2f}")
    session.close()


if __name__ == "__main__":
    main()
