"""Ways a vote could weigh its plans, replayed on plans bench/votes.py saved (tuning problems only).

    python bench/vote_policies.py [--rows .scratch/votes250/t0.7-planner.jsonl] [--votes 7] [--reparse]

Each policy replays compose/votes.vote on the saved greedy and sampled plans with one rule changed; the
table gives its accuracy on all rows and on each half of them (by problem id: a rule that only helps one
half is noise), and the problems it turns right and wrong against the shipped rule (with the sign test's
two-sided p). Nothing here runs a model: bench/votes.py wrote the plans. --reparse first reads each saved
plan again from its raw text with today's parser and calculator, so a repair made since counts.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from fractions import Fraction
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from votes import questions, replay, right, swapped  # noqa: E402  (bench/ is not a package)


def sign_test(wins: int, losses: int) -> float:
    n = wins + losses
    if not n:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(0, min(wins, losses) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def patched(**rules):
    """compose/votes with each named function replaced by `rule(the shipped function)`."""
    from complm_cli.compose import votes

    return swapped(votes, **{name: rule(getattr(votes, name)) for name, rule in rules.items()})


def greedy_bonus(factor: float):
    """The greedy plan (the one written first, marked by run_policy) weighs more."""
    def rule(weight):
        def weighed(plan, question):
            return weight(plan, question) * (factor if getattr(plan, "greedy", False) else 1.0)
        return weighed
    return {"weight": rule}


def squared():
    return {"weight": lambda weight: lambda plan, question: weight(plan, question) ** 2}


def all_numbers_only():
    """A plan that leaves any of the question's numbers out weighs a third."""
    return {"weight": lambda weight: lambda plan, question: 1.0 if weight(plan, question) >= 1 else
            weight(plan, question) / 3}


def doubt(doubtful):
    """A value `doubtful(number, question)` says is doubtful counts as doubtful, as votes.plain's are."""
    def rule(plain):
        def doubted(value, question):
            try:
                number = Fraction(value)
            except (ValueError, ZeroDivisionError):
                return plain(value, question)
            return plain(value, question) and not doubtful(number, question)
        return doubted
    return {"plain": rule}


def echo_doubt():
    """A value that is one of the question's own numbers is doubtful (the plan restated a given)."""
    from complm_cli.compose import votes

    return doubt(lambda number, question: any(number == v for v, _ in votes._given(question)))


def integer_doubt():
    """A value that is not a whole number is doubtful (GSM8K's answers are whole; a user's may not be)."""
    return doubt(lambda number, question: number.denominator != 1)


POLICIES = {
    "shipped": {},
    "greedy plan weighs 1.5": greedy_bonus(1.5),
    "greedy plan weighs 2": greedy_bonus(2.0),
    "weights squared": squared(),
    "a plan missing a number weighs 1/3": all_numbers_only(),
    "a given number as the value doubtful": echo_doubt(),
    "a fraction as the value doubtful": integer_doubt(),
}


def run_policy(rows, question, n, rules) -> dict[str, bool]:
    import votes as bench_votes

    shipped_as_plan = bench_votes.as_plan

    def as_plan(saved, q):
        plan = shipped_as_plan(saved, q)
        plan.greedy = saved is current[0]
        return plan

    current = [None]
    with swapped(bench_votes, as_plan=as_plan), patched(**rules):
        out = {}
        for r in rows:
            current[0] = r["plans"][0]
            out[r["id"]] = replay(r, question[r["id"]], n)[0]
        return out


def reparse(rows: list[dict], question: dict[str, str]) -> int:
    """Each saved plan read again from its raw text by today's parser and calculator (make_plan and
    votes.value_of, as a vote does), so a repair made since the plans were written counts; the number of
    plans whose value changed."""
    from complm_cli.compose import votes
    from complm_cli.compose.dag import escape_user
    from complm_cli.compose.plan import make_plan
    from complm_cli.experts.plugins import tools as registered

    tools = [(None, registered()["calculator"])]
    changed = 0
    for r in rows:
        escaped = escape_user(question[r["id"]])
        for saved in r["plans"]:
            if saved["raw"] is None:
                continue
            plan = make_plan(escaped, lambda messages, raw=saved["raw"]: (raw, saved["tokens"]))
            plan.question = question[r["id"]]
            value = votes.value_of(plan, tools)
            changed += value != saved["value"]
            saved.update(value=value, steps=[n.question for n in plan.nodes], fallback=plan.fallback)
    return changed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=Path, default=HERE.parent / ".scratch" / "votes250" / "t0.7-planner.jsonl")
    ap.add_argument("--votes", type=int, default=7)
    ap.add_argument("--reparse", action="store_true", help="read the saved plans again with today's parser")
    args = ap.parse_args()
    rows = [json.loads(line) for line in args.rows.read_text().splitlines()]
    rows.sort(key=lambda r: int(r["id"].split("-")[1]))
    question = questions(rows)
    if args.reparse:
        saved = run_policy(rows, question, args.votes, {})
        greedy = sum(right(r["plans"][0]["value"], r["gold"]) for r in rows)
        changed = reparse(rows, question)
        now = run_policy(rows, question, args.votes, {})
        print(f"# read again with today's parser and calculator: {changed} plans' values changed; the greedy plan "
              f"right on {greedy} -> {sum(right(r['plans'][0]['value'], r['gold']) for r in rows)} problems, "
              f"--votes {args.votes} on {sum(saved.values())} -> {sum(now.values())} "
              f"(+{sum(now[i] and not saved[i] for i in now)}/-{sum(saved[i] and not now[i] for i in now)})")
    halves = [{r["id"] for r in rows[: len(rows) // 2]}, {r["id"] for r in rows[len(rows) // 2:]}]
    print(f"# {len(rows)} GSM8K tuning problems from {args.rows.name}, --votes {args.votes}")
    print(f"{'policy':40} {'all':>5} {'half 1':>7} {'half 2':>7}  right/wrong vs shipped  p")
    base = None
    for name, rules in POLICIES.items():
        got = run_policy(rows, question, args.votes, rules)
        base = base or got
        parts = [statistics.fmean(got[i] for i in half) * 100 for half in halves]
        wins = sum(got[i] and not base[i] for i in got)
        losses = sum(base[i] and not got[i] for i in got)
        print(f"{name:40} {statistics.fmean(got.values()) * 100:4.0f}% {parts[0]:6.0f}% {parts[1]:6.0f}%"
              f"  +{wins}/-{losses}{'':16}{sign_test(wins, losses):.2f}")


if __name__ == "__main__":
    main()
