"""Which plans a parser change reaches: each question's plan is written once and read by both parsers.

    python bench/plan_diff.py --rev 4795abc [--sets musique,hotpotqa,strategyqa] [--out-dir .scratch/plan-diff]

For a change to compose/plan.py, a held-out set whose plans ask models need not be rerun (half an hour)
when no plan of it is read differently: the planner writes each question's greedy plan (--votes 1, as
`complm ask` writes it first), and compose/plan.py at --rev and as it is now parse the same text. Prints
each plan that differs, with both readings, and the count. The other modules are today's for both
readings, so a change outside plan.py is not compared. Rows go to --out-dir, so a stopped run resumes.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from compose import build_sets  # noqa: E402  (bench/ is not a package)
from votes import swapped  # noqa: E402


def parser_at(rev: str, folder: Path):
    """compose/plan.py as it was at `rev`, loaded as a module of its own."""
    path = folder / f"plan_{rev}.py"
    path.write_text(subprocess.run(["git", "show", f"{rev}:complm_cli/compose/plan.py"], cwd=HERE.parent, check=True,
                                   capture_output=True, text=True).stdout, encoding="utf-8")
    spec = importlib.util.spec_from_file_location(f"plan_{rev}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while they are made
    spec.loader.exec_module(module)
    return module


def reading(module, question: str, raw: str) -> tuple[list[str], str | None]:
    """The steps `module`'s make_plan makes of `raw`, and why it fell back (None: it did not)."""
    plan = module.make_plan(question, lambda messages: (raw, 0))
    return [n.question for n in plan.nodes], plan.fallback


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rev", required=True, help="the revision whose compose/plan.py is compared with today's")
    ap.add_argument("--sets", default="musique,hotpotqa,strategyqa")
    ap.add_argument("--out-dir", type=Path, default=HERE.parent / ".scratch" / "plan-diff")
    args = ap.parse_args()
    from complm_cli.cache.config import load_settings
    from complm_cli.compose import planner
    from complm_cli.compose import plan as today
    from complm_cli.compose.dag import escape_user
    from complm_cli.compose.session import Session

    args.out_dir.mkdir(parents=True, exist_ok=True)
    before = parser_at(args.rev, args.out_dir)
    paths = build_sets(args.out_dir)
    out = args.out_dir / f"plans-{args.rev}.jsonl"
    rows = {json.loads(line)["question"]: json.loads(line) for line in out.read_text().splitlines()} if out.exists() else {}
    raws: dict[str, str] = {}
    written = planner.make_plan

    def keep_raw(question, generate, *rest):
        def generate_and_keep(messages):
            raw, tokens = generate(messages)
            raws[question] = raw
            return raw, tokens
        return written(question, generate_and_keep, *rest)

    questions = [json.loads(line)["question"] for name in args.sets.split(",")
                 for line in paths[name].read_text(encoding="utf-8").splitlines()]
    with swapped(planner, make_plan=keep_raw), Session(load_settings().replace(votes=1), modes=("plan",)) as session, \
            open(out, "a", encoding="utf-8") as f:  # keep_raw: the planner's reply, before it is parsed
        for question in questions:
            if question in rows:
                continue
            session.plan(question)
            raw = raws.get(escape_user(question))  # None: no model wrote a plan (a calculation, a long list)
            rows[question] = {"question": question, "raw": raw}
            f.write(json.dumps(rows[question]) + "\n")
            f.flush()
    differ = 0
    for question in questions:
        raw = rows[question]["raw"]
        if raw is None:
            continue
        escaped = escape_user(question)
        old, new = reading(before, escaped, raw), reading(today, escaped, raw)
        if old != new:
            differ += 1
            print(f"{question}\n  plan: {raw!r}\n  at {args.rev}: {old}\n  today: {new}")
    print(f"# {differ} of {len(questions)} plans ({args.sets}) are read differently than at {args.rev}")


if __name__ == "__main__":
    main()
