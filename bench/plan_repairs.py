"""Is a repair round with the planner worth its time? And what do the parser's own repairs rescue?

    python bench/plan_repairs.py                  # the tuning questions (the decision was made on these)
    python bench/plan_repairs.py --heldout        # bench/compose.py's held-out sets, to report

Each question is planned as `complm ask` plans it. For a plan that is still
invalid after the parser's deterministic repairs (plan.py), the repair round
that complm used to run is run here: the planner is shown its reply and the
problems, and asked for a corrected plan. complm no longer runs it: the
output of this script is why.

Tuning questions: GSM8K training lines 0-99 (the lines prompts may be read
from), complm's sample, the arith, twopart and latency sets written here,
and HotpotQA training questions 1-10 (read in bench/plan_forms.py).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data"



def repair_message(problems: list[str]) -> str:
    """The repair round's message, as complm sent it until this benchmark."""
    hint = ""
    if any("does not come before it" in p or "unknown step" in p for p in problems):
        hint = (" A formula may only use variables set on earlier lines: first write one ask line for each fact "
                "the formula needs, then the formula.")
    return "That plan is not valid: " + "; ".join(problems) + "." + hint + " Reply with a corrected plan for the same question only."


def tuning_questions() -> list[tuple[str, str]]:
    from complm_cli.evaluate.run import sample_path

    out = [("gsm8k 0-99", json.loads(line)["question"])
           for line in list(open(DATA / "gsm8k_train" / "train.jsonl", encoding="utf-8"))[:100]]
    for name, path in (("sample", sample_path()), ("arith", HERE / "data" / "facts_arith.jsonl"),
                       ("twopart", HERE / "data" / "twopart.jsonl")):
        out += [(name, json.loads(line)["question"]) for line in open(path, encoding="utf-8")]
    sys.path.insert(0, str(HERE))
    from latency import QUESTIONS

    out += [("latency", q) for _, q in QUESTIONS]
    rows = json.load(open(DATA / "hotpotqa_train_100_distractor" / "hotpotqa_train.json", encoding="utf-8"))[:10]
    return out + [("hotpotqa 1-10", r["question"]) for r in rows]


def heldout_questions(folder: Path) -> list[tuple[str, str]]:
    sys.path.insert(0, str(HERE))
    from compose import build_sets

    paths = build_sets(folder)
    out = []
    for name in ("gsm8k", "musique", "hotpotqa", "strategyqa"):
        out += [(name, json.loads(line)["question"]) for line in open(paths[name], encoding="utf-8")]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--heldout", action="store_true", help="bench/compose.py's held-out sets instead")
    ap.add_argument("--out-dir", type=Path, default=HERE.parent / ".scratch" / "compose")
    args = ap.parse_args()

    from complm_cli.compose import dag
    from complm_cli.compose import prompts
    from complm_cli.compose.plan import MAX_PLAN_TOKENS, _grounding, parse_plan
    from complm_cli.compose.session import Session

    questions = heldout_questions(args.out_dir) if args.heldout else tuning_questions()
    session = Session(modes=("parallel",))
    replies: list[str] = []
    real = session._generate

    def spy(*a, **kw):
        text, tokens = real(*a, **kw)
        replies.append(text)
        return text, tokens

    session._generate = spy
    stats: dict[str, dict] = {}
    try:
        for name, question in questions:
            replies.clear()
            t = time.perf_counter()
            plan = session.plan(question)
            row = stats.setdefault(name, {"n": 0, "invalid": 0, "repaired": 0, "repair_s": [], "plan_s": []})
            row["n"] += 1
            row["plan_s"].append(time.perf_counter() - t)
            if not plan.fallback:
                continue
            row["invalid"] += 1
            escaped = dag.escape_user(question)
            problems = _grounding(parse_plan(escaped, replies[0]), escaped).problems
            retry = prompts.planner_messages(escaped) + [
                {"role": "assistant", "content": replies[0]},
                {"role": "user", "content": repair_message(problems)}]
            t = time.perf_counter()
            second, _ = real(session.planner, retry, max_tokens=MAX_PLAN_TOKENS, temperature=0.0,
                             prefix=prompts.planner_prefix_length())
            row["repair_s"].append(time.perf_counter() - t)
            fixed = not _grounding(parse_plan(escaped, second), escaped).problems
            row["repaired"] += fixed
            print(f"[{name}] invalid: {problems[0][:70]} | repair {'valid' if fixed else 'invalid'} "
                  f"{row['repair_s'][-1]:.1f} s | {question[:60]}", file=sys.stderr, flush=True)
    finally:
        session.close()

    print(f"planner {session.planner.name}; {'held-out' if args.heldout else 'tuning'} questions")
    print(f"{'set':14} {'n':>4} {'plan s':>7} {'invalid':>8} {'repaired':>9} {'repair s (mean)':>16}")
    total = {"n": 0, "invalid": 0, "repaired": 0, "repair_s": [], "plan_s": []}
    for name, row in list(stats.items()) + [("all", total)]:
        if name != "all":
            for key in total:
                total[key] += row[key]
        mean = f"{statistics.fmean(row['repair_s']):.1f}" if row["repair_s"] else "-"
        print(f"{name:14} {row['n']:>4} {statistics.median(row['plan_s']):>7.2f} {row['invalid']:>8} {row['repaired']:>9} {mean:>16}")
    print("plan s: median seconds to plan; invalid: plans that fall back to the whole question after the parser's "
          "repairs; repaired: of those, how many the old repair round made valid")


if __name__ == "__main__":
    main()
