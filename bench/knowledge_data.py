"""Corpora and question splits for the knowledge benchmarks (bench/knowledge.py, bench/corpus_routing.py).

For each multi-hop set, the corpus is every paragraph of every question
(MuSiQue: 2,000; HotpotQA: 994), so a question's 2 to 4 gold paragraphs hide
among thousands. The questions are split before anything is run: `tune`
(what prompts, k and the threshold may be chosen on) and `heldout` (reported,
never looked at). HotpotQA's first 10 questions were read when the planner's
prompt was written, so they go to `tune`; the rest is split at random (seed 18).

    python bench/knowledge_data.py      # writes bench/data/knowledge/*.jsonl
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
OUT = Path(__file__).resolve().parent / "data" / "knowledge"
TUNE = 40


def _pid(title: str, text: str) -> str:
    return f"{title}#{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def musique() -> tuple[list[dict], list[dict]]:
    rows = json.load(open(DATA / "musique_train_100_full" / "musique_train.json", encoding="utf-8"))
    passages, questions = {}, []
    for r in rows:
        gold = []
        for p in r["paragraphs"]:
            pid = _pid(p["title"], p["paragraph_text"])
            passages[pid] = {"id": pid, "title": p["title"], "text": p["paragraph_text"]}
            if p["is_supporting"]:
                gold.append(pid)
        steps = [s["question"] for s in r["question_decomposition"]]
        questions.append({"id": r["id"], "question": r["question"], "answers": [r["answer"], *r["answer_aliases"]],
                          "gold_passages": gold, "steps": steps})
    return list(passages.values()), questions


def hotpotqa() -> tuple[list[dict], list[dict]]:
    rows = json.load(open(DATA / "hotpotqa_train_100_distractor" / "hotpotqa_train.json", encoding="utf-8"))
    passages, questions = {}, []
    for r in rows:
        for title, sentences in r["context"]:
            text = "".join(sentences).strip()
            passages[_pid(title, text)] = {"id": _pid(title, text), "title": title, "text": text}
        support = {t for t, _ in r["supporting_facts"]}
        gold = [_pid(t, "".join(s).strip()) for t, s in r["context"] if t in support]
        questions.append({"id": r["_id"], "question": r["question"], "answers": [r["answer"]], "gold_passages": gold})
    return list(passages.values()), questions


def split(questions: list[dict], first_tuned: int) -> tuple[list[dict], list[dict]]:
    rest = questions[first_tuned:]
    random.Random(18).shuffle(rest)
    need = TUNE - first_tuned
    return questions[:first_tuned] + rest[:need], rest[need:]


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, (passages, questions), first in (("musique", musique(), 0), ("hotpotqa", hotpotqa(), 10)):
        tune, heldout = split(questions, first)
        for part, rows in (("passages", passages), ("tune", tune), ("heldout", heldout)):
            with open(OUT / f"{name}_{part}.jsonl", "w", encoding="utf-8") as f:
                for row in rows:
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
        print(f"{name}: {len(passages)} passages, {len(tune)} tuning questions, {len(heldout)} held out")


if __name__ == "__main__":
    main()
