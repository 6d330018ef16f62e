"""Routing by competence: is the expert a question goes to by topic as good as the fallback there?

For every MMLU dev question (../shared/data/mmlu_dev, 57 subjects x 5) the
router picks an expert by topic alone (no margins). Each question that goes to
a smaller expert is then answered by that expert and by the fallback, and the
table shows both accuracies per expert and subject. An expert that answers its
own topic worse than the fallback should not get nodes on topic similarity
alone: the catalog gives it a `route_margin`, and the last table shows where
the shipped margins send the same questions.

    python bench/competence.py [--limit N]
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "mmlu_dev" / "dev"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def mmlu() -> list[dict]:
    rows = []
    for path in sorted(DATA.glob("*_dev.csv")):
        subject = path.name[: -len("_dev.csv")]
        with open(path, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                choices = [row[f"choice{i}"] for i in range(4)]
                rows.append({"subject": subject, "question": row["question"], "choices": choices,
                             "gold": "ABCD"[int(row["answer"])]})
    return rows


def prompt(row: dict) -> list[dict]:
    options = "\n".join(f"{letter}. {text}" for letter, text in zip("ABCD", row["choices"]))
    return [{"role": "system", "content": "Answer the multiple-choice question with the letter of the correct option only."},
            {"role": "user", "content": f"{row['question']}\n{options}\nAnswer:"}]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=None, help="at most N questions per expert")
    args = ap.parse_args()

    from complm_cli.evaluate.metrics import choice_letter
    from complm_cli.compose.session import Session
    from complm_cli.compose.route import Router

    session = Session(modes=("parallel",))
    base = session.router()
    topic = Router(base.experts, base.fallback, base.embedder, base.cache, base.threshold, competence=False)
    rows = mmlu()
    routes = topic.route([r["question"] for r in rows])
    shipped = base.route([r["question"] for r in rows])
    fallback = session.fallback
    per: dict[str, list[dict]] = defaultdict(list)
    for row, route in zip(rows, routes):
        if route.expert != fallback.name:
            per[route.expert].append(row)

    def answer(expert, row) -> bool:
        text, _ = session._generate(expert, prompt(row), max_tokens=32, temperature=0.0)
        return choice_letter(text) == row["gold"]

    print(f"MMLU dev: {len(rows)} questions; by topic alone, "
          + ", ".join(f"{name} gets {len(qs)}" for name, qs in per.items()) + f", {fallback.name} the rest\n")
    print(f"{'expert':22} {'subject':34} {'n':>3} {'expert acc':>10} {fallback.name + ' acc':>24}")
    totals = {}
    for name, qs in per.items():
        expert = session.catalog.get(name)
        qs = qs[: args.limit] if args.limit else qs
        by_subject: dict[str, list[tuple[bool, bool]]] = defaultdict(list)
        for row in qs:
            by_subject[row["subject"]].append((answer(expert, row), answer(fallback, row)))
        for subject, pairs in sorted(by_subject.items()):
            print(f"{name:22} {subject:34} {len(pairs):>3} {sum(a for a, _ in pairs) / len(pairs):>10.2f} "
                  f"{sum(b for _, b in pairs) / len(pairs):>24.2f}", flush=True)
        flat = [p for pairs in by_subject.values() for p in pairs]
        totals[name] = (len(flat), sum(a for a, _ in flat) / len(flat), sum(b for _, b in flat) / len(flat))
    print()
    for name, (n, mine, theirs) in totals.items():
        margin = session.catalog.get(name).route_margin
        kept = sum(1 for r, s in zip(routes, shipped) if r.expert == name and s.expert == name)
        print(f"{name}: {mine:.2f} against the fallback's {theirs:.2f} on the {n} questions its topic wins "
              f"({'worse' if mine < theirs else 'as good or better'}); with route_margin {margin:g} it keeps {kept} of them")
    session.close()


if __name__ == "__main__":
    main()
