"""Does composing experts beat the same model answering directly? One table, seven question sets.

    python bench/compose.py                       # every set, parallel and monolithic
    python bench/compose.py --modes monolithic    # fill in one mode (rows are kept in --out-dir)
    python bench/compose.py --report              # only print the table from the saved rows

Sets:
  sample      complm's shipped 30-question sample (written for complm)
  gsm8k       100 GSM8K training problems drawn (seed 7) from lines 1000 onward of
              ../shared/data/gsm8k_train/train.jsonl; lines 0-999 are the only ones
              that may be read while writing prompts, so these 100 are held out
  musique     the 100 MuSiQue training questions (never used for prompts or tuning)
  hotpotqa    HotpotQA training questions 11 to 100 of ../shared/data/hotpotqa_train_100_distractor,
              without the one bench/latency.py asks (the first 10 were read in bench/plan_forms.py)
  strategyqa  100 StrategyQA training questions drawn (seed 7) from ../shared/data/strategyqa_train,
              yes/no questions whose steps are implicit (never used for prompts or tuning)
  arith       20 questions that combine looked-up facts with arithmetic (written here)
  twopart     20 simple two-part questions (written here); scored per part
  asked       24 questions whose answer must be said in words (written here, for issue 19, before any
              run on them): 8 chains that ask for each step ("..., and how tall is it?"), 8 comparisons
              (the winner by name), 8 yes/no questions over arithmetic; scored per part

Rows go to --out-dir (one JSONL per set, `complm eval --out` format), so a run
that is stopped resumes, and modes can be filled in separately. Accuracy is
`correct` (the gold appears in the answer, yes/no and letters understood); for
GSM8K also `final` (the answer's last number is the gold), the usual GSM8K rule,
since a worked answer contains many numbers.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DATA = ROOT.parent / "shared" / "data"
SETS = ("sample", "gsm8k", "musique", "arith", "twopart", "asked", "hotpotqa", "strategyqa")
GSM8K_TUNING_LINES = 1000


def build_sets(folder: Path) -> dict[str, Path]:
    """Write each set as JSONL under `folder` (the held-out draws are reproducible)."""
    from complm_cli.evaluate.run import sample_path

    folder.mkdir(parents=True, exist_ok=True)
    paths = {"sample": sample_path(), "arith": HERE / "data" / "facts_arith.jsonl", "twopart": HERE / "data" / "twopart.jsonl",
             "asked": HERE / "data" / "asked.jsonl"}
    gsm = folder / "gsm8k_heldout.jsonl"
    if not gsm.exists():
        with open(DATA / "gsm8k_train" / "train.jsonl", encoding="utf-8") as f:
            lines = [line for line in f]
        picked = sorted(random.Random(7).sample(range(GSM8K_TUNING_LINES, len(lines)), 100))
        with open(gsm, "w", encoding="utf-8") as out:
            for i in picked:
                row = json.loads(lines[i])
                out.write(json.dumps({"id": f"gsm8k-{i}", "question": row["question"], "answer": row["answer"]}) + "\n")
    paths["gsm8k"] = gsm
    musique = folder / "musique_questions.jsonl"  # not musique.jsonl: that name holds the result rows
    if not musique.exists():
        rows = json.load(open(DATA / "musique_train_100_full" / "musique_train.json", encoding="utf-8"))
        with open(musique, "w", encoding="utf-8") as out:
            for row in rows:
                out.write(json.dumps({"id": row["id"], "question": row["question"],
                                      "answers": [row["answer"], *row.get("answer_aliases", [])]}) + "\n")
    paths["musique"] = musique
    hotpot = folder / "hotpotqa_questions.jsonl"
    if not hotpot.exists():
        sys.path.insert(0, str(HERE))
        from latency import QUESTIONS

        asked = {q for _, q in QUESTIONS}
        rows = json.load(open(DATA / "hotpotqa_train_100_distractor" / "hotpotqa_train.json", encoding="utf-8"))
        with open(hotpot, "w", encoding="utf-8") as out:
            for row in rows[10:]:
                if row["question"] not in asked:
                    out.write(json.dumps({"id": row["_id"], "question": row["question"], "answer": row["answer"]}) + "\n")
    paths["hotpotqa"] = hotpot
    strategy = folder / "strategyqa_questions.jsonl"
    if not strategy.exists():
        rows = json.load(open(DATA / "strategyqa_train" / "strategyqa_train_minus_heldout.json", encoding="utf-8"))
        with open(strategy, "w", encoding="utf-8") as out:
            for i in sorted(random.Random(7).sample(range(len(rows)), 100)):
                row = rows[i]
                out.write(json.dumps({"id": row["qid"], "question": row["question"], "answer": row["answer"]}) + "\n")
    paths["strategyqa"] = strategy
    return paths


def last_number_right(prediction: str, gold: list[str]) -> bool:
    from complm_cli.numbers import find_numbers

    numbers = find_numbers(prediction)
    golds = {v for g in gold for _, v, _ in find_numbers(g)}
    return bool(numbers) and numbers[-1][1] in golds


def parts_right(prediction: str, parts: list[list[str]]) -> tuple[int, int]:
    from complm_cli.evaluate.metrics import contains

    return sum(1 for p in parts if contains(prediction, p)), len(parts)


def report(paths: dict[str, Path], out_dir: Path, sets: list[str], modes: list[str]) -> None:
    extra = {}
    for name in ("twopart", "asked"):
        with open(paths[name], encoding="utf-8") as f:
            extra[name] = {r["id"]: r["parts"] for r in map(json.loads, f)}
    print(f"{'set':10} {'n':>4} | " + " | ".join(f"{m:>10} acc  mean s" for m in modes) + " | composed-direct  composed/direct time")
    for name in sets:
        path = out_dir / f"{name}.jsonl"
        if not path.exists():
            continue
        rows = [json.loads(line) for line in open(path, encoding="utf-8") if line.strip().endswith("}")]
        cells, accs, walls = [], {}, {}
        present = [m for m in modes if any(r["mode"] == m for r in rows)]  # a set run in one mode only
        ids = set.intersection(*[{r["id"] for r in rows if r["mode"] == m} for m in present]) if present else set()
        for m in modes:
            mine = [r for r in rows if r["mode"] == m and r["id"] in ids]
            if not mine:
                cells.append(f"{'-':>10}     {'-':>6}")
                continue
            if name in extra:
                got = [parts_right(r["prediction"], extra[name][r["id"]]) for r in mine]
                acc = sum(a for a, _ in got) / sum(b for _, b in got)
            elif name == "gsm8k":
                acc = statistics.fmean(last_number_right(r["prediction"], r["gold"]) for r in mine)
            else:
                acc = statistics.fmean(r["scores"]["correct"] for r in mine)
            accs[m], walls[m] = acc, statistics.fmean(r["timings"]["wall_s"] for r in mine)
            cells.append(f"{acc * 100:>9.0f}% {walls[m]:>7.1f}")
        delta = ""
        if "parallel" in accs and "monolithic" in accs:
            delta = f"{(accs['parallel'] - accs['monolithic']) * 100:+6.0f} pts  {walls['parallel'] / walls['monolithic']:>6.2f}x"
        print(f"{name:10} {len(ids):>4} | " + " | ".join(cells) + " | " + delta)
    print("acc: gsm8k = last number is the gold; twopart = parts right; others = gold contained (complm eval's `correct`)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", default=",".join(SETS))
    ap.add_argument("--modes", default="parallel,monolithic")
    ap.add_argument("--limit", type=int, default=None, help="only the first N questions of each set")
    ap.add_argument("--skip", type=int, default=0, help="leave out the first N questions of each set (to split a run)")
    ap.add_argument("--out-dir", type=Path, default=ROOT / ".scratch" / "compose")
    ap.add_argument("--report", action="store_true", help="print the table from saved rows, run nothing")
    ap.add_argument("--own-plans", action="store_true", help="each mode plans for itself as `complm ask` does (parallel streams)")
    args = ap.parse_args()
    sets = [s for s in args.sets.split(",") if s]
    modes = [m for m in args.modes.split(",") if m]
    paths = build_sets(args.out_dir)
    if not args.report:
        from complm_cli.evaluate import run as ev
        from complm_cli.evaluate.datasets import read_dataset
        from complm_cli.compose.session import Session

        session = Session(modes=tuple(modes))
        try:
            for name in sets:
                examples = read_dataset(paths[name], None, None, None)[args.skip:]
                examples = examples[: args.limit] if args.limit else examples
                done = [0]

                def step(ex_id, mode, row, name=name, total=len(examples) * len(modes)):
                    done[0] += 1
                    if row is not None:
                        print(f"[{name} {done[0]}/{total}] {ex_id} {mode} {'ok ' if row['scores']['correct'] else 'bad'} "
                              f"{row['timings']['wall_s']:.1f}s  {row['prediction'][:70]!r}", file=sys.stderr, flush=True)

                ev.run(session, examples, tuple(modes), out=args.out_dir / f"{name}.jsonl", on_step=step,
                       shared_plan=not args.own_plans)
        finally:
            session.close()
    report(paths, args.out_dir, sets, ["parallel", "monolithic"])


if __name__ == "__main__":
    main()
