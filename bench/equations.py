"""Equations in plans: the planner's prompt with solve() against the prompt without it, on GSM8K tuning problems.

    python bench/equations.py [--n 40] [--out-dir .scratch/equations]

Draws N problems (seed 11) from lines 0-999 of ../shared/data/gsm8k_train, the
lines that may be read while writing prompts (bench/compose.py's held-out
draw starts at line 1000), and runs each in parallel mode twice: with the
planner's prompt as shipped (which shows solve("equation", ..., "name")) and
with the solve text and example taken out. Prints accuracy by the GSM8K rule
(the answer's last number is the gold), mean seconds, and how many plans
used solve(). Rows go to --out-dir, one JSONL per variant, so a stopped run
resumes. The held-out figure is bench/compose.py's gsm8k set.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data" / "gsm8k_train" / "train.jsonl"


def draw(n: int) -> list[dict]:
    lines = DATA.read_text(encoding="utf-8").splitlines()[:1000]
    picked = sorted(random.Random(11).sample(range(len(lines)), n))
    rows = [json.loads(lines[i]) for i in picked]
    return [{"id": f"gsm8k-{i}", "question": r["question"], "answer": r["answer"].split("####")[-1].strip()}
            for i, r in zip(picked, rows)]


def without_solve() -> None:
    from complm_cli.compose import prompts

    prompts.PLANNER_SYSTEM = prompts.PLANNER_SYSTEM.replace(
        '; solve("equation", ..., "name") gives the value of name that makes the equations true.', ".")
    prompts.PLANNER_EXAMPLES[:] = [(q, p) for q, p in prompts.PLANNER_EXAMPLES if "solve(" not in p]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--variant", choices=["with", "without", "both"], default="both")
    ap.add_argument("--out-dir", type=Path, default=HERE.parent / ".scratch" / "equations")
    args = ap.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    problems = draw(args.n)
    variants = ["with", "without"] if args.variant == "both" else [args.variant]
    for variant in variants:
        # Each variant in a process of its own: the planner's prompt prefix is cached per prompt.
        if len(variants) > 1:
            import subprocess

            subprocess.run([sys.executable, __file__, "--n", str(args.n), "--variant", variant, "--out-dir",
                            str(args.out_dir)], check=True)
            continue
        run(variant, problems, args.out_dir / f"{variant}.jsonl")
    report(args.out_dir, variants)


def run(variant: str, problems: list[dict], out: Path) -> None:
    from complm_cli.compose.session import Session
    from complm_cli.numbers import find_numbers

    if variant == "without":
        without_solve()
    done = {json.loads(line)["id"] for line in out.read_text().splitlines()} if out.exists() else set()
    with Session(modes=("parallel",)) as session, open(out, "a", encoding="utf-8") as f:
        for p in problems:
            if p["id"] in done:
                continue
            result = session.ask(p["question"])
            numbers = find_numbers(result.answer)
            golds = {v for _, v, _ in find_numbers(p["answer"])}
            right = bool(numbers) and numbers[-1][1] in golds
            steps = [n.calculation["formula"] if n.calculation else n.question for n in result.nodes]
            f.write(json.dumps({"id": p["id"], "right": right, "wall_s": result.timings["wall_s"],
                                "solve": any("solve(" in s for s in steps), "answer": result.answer[-200:],
                                "gold": p["answer"], "steps": steps}) + "\n")
            f.flush()
            print(f"[{variant}] {p['id']} {'ok ' if right else 'bad'} {result.timings['wall_s']:.1f}s {result.answer[-60:]!r}",
                  file=sys.stderr, flush=True)


def report(folder: Path, variants: list[str]) -> None:
    print(f"{'variant':8} {'n':>3}  accuracy  mean s  plans with solve()")
    for variant in variants:
        path = folder / f"{variant}.jsonl"
        if not path.exists():
            continue
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        print(f"{variant:8} {len(rows):>3}  {statistics.fmean(r['right'] for r in rows) * 100:7.0f}%  "
              f"{statistics.fmean(r['wall_s'] for r in rows):6.1f}  {sum(r['solve'] for r in rows):>3}")


if __name__ == "__main__":
    main()
