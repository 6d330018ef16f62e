"""Plans that vote, on GSM8K tuning problems: one greedy plan against the vote, at a sampling temperature.

    python bench/votes.py [--n 60] [--samples 8] [--temperature 0.7] [--out-dir .scratch/votes]

Draws N problems (seed 11, as bench/equations.py) from lines 0-999 of
../shared/data/gsm8k_train, the lines that may be read while tuning
(bench/compose.py's held-out draw starts at line 1000). For each, the
planner writes its greedy plan and --samples sampled plans (seeds 1 to N,
as `complm ask` does with --seed 0), which the calculator computes
(compose/votes.value_of). The report replays compose/votes.vote on the
saved plans for --votes 1, 3, 5, 7 and 9 (as many as were saved), as shipped and
with one vote a plan (no weights, no doubtful values, no vote when the planner
wrote no plan: the vote before it weighed its plans): accuracy (the value is the
gold) and the mean number of plans written. Rows go to --out-dir, one JSONL per
temperature, so a stopped run resumes. The held-out figure is
bench/compose.py's gsm8k set, run with the shipped default.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from compose import last_number_right  # noqa: E402  (bench/ is not a package)
from equations import DATA, draw  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--temperature", type=float, default=None, help="default: the shipped votes.TEMPERATURE")
    ap.add_argument("--out-dir", type=Path, default=HERE.parent / ".scratch" / "votes")
    ap.add_argument("--report", action="store_true", help="print the table from saved rows, run nothing")
    args = ap.parse_args()
    from complm_cli.compose import votes

    temperature = votes.TEMPERATURE if args.temperature is None else args.temperature
    args.out_dir.mkdir(parents=True, exist_ok=True)
    out = args.out_dir / f"t{temperature:g}.jsonl"
    if not args.report:
        run(draw(args.n), out, args.samples, temperature)
    report(out, temperature)


def run(problems: list[dict], out: Path, samples: int, temperature: float) -> None:
    from complm_cli.cache.config import load_settings
    from complm_cli.compose import dag, votes
    from complm_cli.compose.session import Session

    votes.TEMPERATURE = temperature
    done = {json.loads(line)["id"] for line in out.read_text().splitlines()} if out.exists() else set()
    settings = load_settings().replace(votes=1)  # the greedy plan alone; the samples are written here
    with Session(settings, modes=("plan",)) as session, open(out, "a", encoding="utf-8") as f:
        tools = session.routing.tools
        for p in problems:
            if p["id"] in done:
                continue
            t = time.perf_counter()
            greedy = session.plan(p["question"])
            escaped = dag.escape_user(p["question"])
            with ThreadPoolExecutor(max_workers=samples) as ex:  # decoded in one batch, as a vote does
                sampled = list(ex.map(lambda k: session.planning._sample(p["question"], escaped, k, None),
                                      range(1, samples + 1)))
            values = [votes.value_of(x, tools) for x in (greedy, *sampled)]
            f.write(json.dumps({"id": p["id"], "gold": p["answer"], "seconds": round(time.perf_counter() - t, 2),
                                "plans": [{"raw": x.raw, "steps": [n.question for n in x.nodes], "fallback": x.fallback,
                                           "tokens": x.tokens, "value": v} for x, v in zip((greedy, *sampled), values)]}) + "\n")
            f.flush()
            print(f"{p['id']} gold {p['answer']}: {values}", file=sys.stderr, flush=True)


def right(value: str | None, gold: str) -> bool:
    """GSM8K's rule, as bench/compose.py scores it: the last number is the gold."""
    return last_number_right(value or "", [gold])


def report(out: Path, temperature: float) -> None:
    from complm_cli.compose import votes
    from complm_cli.compose.dag import Node, Plan, escape_user

    rows = [json.loads(line) for line in out.read_text().splitlines()]
    if not rows:
        print("no rows yet")
        return
    # Replay vote() on the saved plans: each stands in as one step that "computes" its saved value (or
    # fails, for a plan of calculations whose arithmetic failed); any other plan is a fallback, as it votes not.
    from complm_cli.experts.plugins import tools as registered

    calculator = registered()["calculator"]
    tools = [(None, _Replay())]

    def as_plan(saved: dict, question: str) -> Plan:
        alone = not saved["fallback"] and all(calculator.claims(step) for step in saved["steps"])
        if alone:
            return Plan(question, [Node(1, _VALUE + (saved["value"] or _FAILS), ())], raw=saved["raw"],
                        tokens=saved["tokens"])
        whole = saved["steps"] == [escape_user(question)]  # the planner wrote no usable plan
        return Plan(question, [Node(1, saved["steps"][0] if whole else "asks a model", ())],
                    fallback=saved["fallback"] or (None if whole else "asks a model"), tokens=saved["tokens"])

    lines = DATA.read_text(encoding="utf-8").splitlines()
    question = {r["id"]: json.loads(lines[int(r["id"].split("-")[1])])["question"] for r in rows}
    print(f"# {len(rows)} GSM8K tuning problems (lines 0-999, seed 11), temperature {temperature:g}")
    print(f"{'policy':40} accuracy  plans written (mean)")
    shipped = votes.weight, votes.plain, votes._unplanned, votes._hopeless
    plain_count = (lambda plan, question: 1.0, lambda value, question: True, lambda plan: False, lambda values: False)
    for variant, (votes.weight, votes.plain, votes._unplanned, votes._hopeless) in (("", shipped),
                                                                                 (", one vote a plan", plain_count)):
        for n in (n for n in (1, 3, 5, 7, 9) if n <= min(len(r["plans"]) for r in rows) and (n > 1 or not variant)):
            scores, written = [], []
            for r in rows:
                plans = [as_plan(x, question[r["id"]]) for x in r["plans"]]
                chosen, tally = votes.vote(plans[0], lambda k: plans[k], n, tools)
                step = chosen.nodes[0].question  # a plan that asks a model scores nothing here
                scores.append(step.startswith(_VALUE) and right(step.removeprefix(_VALUE), r["gold"]))
                written.append(len(tally.values) if tally else 1)
            label = "greedy plan alone (--votes 1)" if n == 1 else f"--votes {n}{variant}"
            print(f"{label:40} {statistics.fmean(scores) * 100:7.0f}%  {statistics.fmean(written):.1f}")
    votes.weight, votes.plain, votes._unplanned, votes._hopeless = shipped
    samples = [right(x["value"], r["gold"]) for r in rows for x in r["plans"][1:]]
    print(f"{'one sampled plan':40} {statistics.fmean(samples) * 100:7.0f}%")
    print(f"{'any plan right (the ceiling)':40} {statistics.fmean(any(right(x['value'], r['gold']) for x in r['plans']) for r in rows) * 100:7.0f}%")
    print(f"mean seconds a problem (greedy plan, then {len(rows[0]['plans']) - 1} samples in one batch): "
          f"{statistics.fmean(r['seconds'] for r in rows):.1f}")


_FAILS = "(failed)"
_VALUE = "= "  # a replayed plan's one step: the value it computed


class _Replay:
    """A tool that 'computes' a saved value: the replay's plans are one step holding it."""

    def claims(self, step: str) -> str | None:
        return step if step.startswith(_VALUE) else None

    def run(self, step: str, parents: dict):
        from complm_cli.experts.tools import ToolError, ToolResult

        if step == _VALUE + _FAILS:
            raise ToolError("the plan's arithmetic failed")
        return ToolResult(step.removeprefix(_VALUE))


if __name__ == "__main__":
    main()
