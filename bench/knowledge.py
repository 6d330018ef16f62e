"""Knowledge experts on multi-hop questions: three modes side by side, on the same questions.

1. direct: one model, no corpus (`--mode monolithic`);
2. one retrieval: the whole question's passages, then one model answers (`--mode monolithic --corpus`);
3. composed: a plan, a retrieval per step, a reader per step (`complm ask --corpus`).

The corpus of a set is every paragraph of its 100 questions (bench/knowledge_data.py);
accuracy is "gold contained" (complm eval's metric); recall is the share of a question's
gold paragraphs that any of its retrievals found (what a reader could have used, whether
or not it said so). Times are wall seconds of each run, measured in this one process,
modes interleaved question by question so machine noise falls on all three alike.

    python bench/knowledge_data.py
    complm corpus add bench-musique bench/data/knowledge/musique_passages.jsonl
    complm corpus add bench-hotpotqa bench/data/knowledge/hotpotqa_passages.jsonl
    python bench/knowledge.py --set musique --split heldout --limit 30
    python bench/knowledge.py --report          # the table of every result file
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

ROOT = Path(__file__).resolve().parent
DATA = ROOT / "data" / "knowledge"
OUT = ROOT / "knowledge-runs"
MODES = ("direct", "retrieval", "composed")


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()] if path.exists() else []


def _recall(retrieved: set[str], gold: list[str]) -> float:
    return sum(g in retrieved for g in gold) / len(gold) if gold else 0.0


def run(name: str, split: str, limit: int, tag: str = "") -> None:
    from complm_cli.cache.config import load_settings
    from complm_cli.compose.session import Session
    from complm_cli.evaluate.metrics import contains
    from complm_cli.events import NodeSources

    questions = _jsonl(DATA / f"{name}_{split}.jsonl")[:limit]
    out = OUT / f"{name}-{split}{'-' + tag if tag else ''}.jsonl"
    out.parent.mkdir(exist_ok=True)
    done = {(r["id"], r["mode"]) for r in _jsonl(out)}
    settings = load_settings().replace(seed=0)
    plain = Session(settings, modes=("monolithic",))
    knowing = Session(settings, corpora=[f"bench-{name}"])
    try:
        for i, q in enumerate(questions, 1):
            for mode in MODES:
                if (q["id"], mode) in done:
                    continue
                retrieved: set[str] = set()

                def listen(event, retrieved=retrieved):
                    if isinstance(event, NodeSources):
                        retrieved.update(h.record_id for h in event.sources)

                session = plain if mode == "direct" else knowing
                result = session.ask(q["question"], mode="parallel" if mode == "composed" else "monolithic", on_event=listen)
                row = {"id": q["id"], "mode": mode, "question": q["question"], "answer": result.answer,
                       "gold": q["answers"], "correct": contains(result.answer, q["answers"]),
                       "recall": _recall(retrieved, q["gold_passages"]) if mode != "direct" else None,
                       "status": result.status, "wall_s": round(result.timings["wall_s"], 2),
                       "steps": len(result.nodes), "corpus_steps": sum(bool(n.sources) or n.not_found for n in result.nodes)}
                with open(out, "a", encoding="utf-8") as f:
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
                print(f"{i:3d} {mode:9s} {row['correct']:.0f} {row['wall_s']:6.1f}s {result.answer[:70]!r}", flush=True)
    finally:
        plain.close()
        knowing.close()


def recall_now(name: str, split: str, limit: int) -> None:
    """One-retrieval recall with the code as it is now, beside the recall the result file recorded: retrieval
    changes (the vector index, the BM25 words) checked without running a model."""
    from complm_cli.cache.catalog import load_catalog
    from complm_cli.cache.config import load_settings
    from complm_cli.cache.store import Store
    from complm_cli.compose.knowledge import Knowledge, with_corpora
    from complm_cli.compose.route import Embedder

    settings, catalog = load_settings(), load_catalog()
    embedder = Embedder(Store(settings).require(catalog.embedder), catalog.embedder.name)
    knowledge = Knowledge(settings.cache_dir, with_corpora(catalog, [f"bench-{name}"]), embedder)
    recorded = {r["id"]: r["recall"] for r in _jsonl(OUT / f"{name}-{split}.jsonl") if r["mode"] == "retrieval"}
    now = {q["id"]: _recall({h.record_id for h in knowledge.retrieve_all(q["question"])}, q["gold_passages"])
           for q in _jsonl(DATA / f"{name}_{split}.jsonl")[:limit]}
    same = sum(abs(now[i] - recorded[i]) < 1e-9 for i in now if i in recorded)
    print(f"{name} {split}: one-retrieval recall now {statistics.mean(now.values()):.1%}, recorded "
          f"{statistics.mean(recorded[i] for i in now if i in recorded):.1%}; the same on {same} of {len(now)} questions")
    knowledge.close()


def report() -> None:
    print("set       split          n  mode        accuracy  recall  median s  mean s")
    for path in sorted(OUT.glob("*.jsonl")):
        rows = _jsonl(path)
        ids = {r["id"] for r in rows}
        complete = [i for i in ids if all(any(r["id"] == i and r["mode"] == m for r in rows) for m in MODES)]
        name, split = path.stem.split("-", 1)
        means = {}
        for mode in MODES:
            picked = [r for r in rows if r["mode"] == mode and r["id"] in complete]
            if not picked:
                continue
            acc = statistics.mean(r["correct"] for r in picked)
            recall = [r["recall"] for r in picked if r["recall"] is not None]
            times = [r["wall_s"] for r in picked]
            means[mode] = statistics.mean(times)
            print(f"{name:9s} {split:13s} {len(picked):3d}  {mode:10s} {acc:8.0%}  {statistics.mean(recall) if recall else 0:6.0%}"
                  f"  {statistics.median(times):8.1f}  {means[mode]:6.1f}")
        if "composed" in means and "retrieval" in means:
            print(f"{'':29s} composed / one retrieval, mean wall time: {means['composed'] / means['retrieval']:.2f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", choices=("musique", "hotpotqa"))
    parser.add_argument("--split", choices=("tune", "heldout"), default="heldout")
    parser.add_argument("--limit", type=int, default=30)
    parser.add_argument("--tag", default="", help="a name for this variant's result file (tuning runs)")
    parser.add_argument("--report", action="store_true")
    parser.add_argument("--recall-now", action="store_true", help="one-retrieval recall with the current code, no model")
    args = parser.parse_args()
    if args.recall_now:
        recall_now(args.set, args.split, args.limit)
    elif args.report or not args.set:
        report()
    else:
        run(args.set, args.split, args.limit, args.tag)
