"""Plans that vote, on GSM8K tuning problems: one greedy plan against the vote, at a sampling temperature.

    python bench/votes.py [--n 60] [--samples 8] [--temperature 0.7] [--prompt word|planner] [--out-dir .scratch/votes]

Draws N problems (seed 11, as bench/equations.py) from lines 0-999 of
../shared/data/gsm8k_train, the lines that may be read while tuning
(bench/compose.py's held-out draw starts at line 1000). For each, the
planner writes its greedy plan and --samples sampled plans (seeds 1 to N,
as `complm ask` does with --seed 0), which the calculator computes
(compose/votes.value_of). The report replays compose/votes.vote on the
saved plans for --votes 1, 3, 5, 7 and 9 (as many as were saved), as shipped and
with one vote a plan (no weights, no doubtful values, no vote when the planner
wrote no plan: the vote before it weighed its plans): accuracy (the value is the
gold) and the mean number of plans written. --prompt planner writes the sampled
plans with the planner's own prompt (as shipped); --prompt word writes them
with WORD_SYSTEM and WORD_EXAMPLES below, a prompt made for word problems, tried and not
shipped (held out it lost 7 points: bench/votes-results.txt). Rows go to --out-dir, one JSONL per
temperature and prompt, so a stopped run resumes; --compare sets the two prompts'
saved rows side by side, problem by problem. The held-out figure is
bench/compose.py's gsm8k set, run with the shipped default.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
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
    ap.add_argument("--prompt", choices=["word", "planner"], default="planner",
                    help="the sampled plans' prompt: the planner's (shipped) or WORD_SYSTEM (an experiment)")
    ap.add_argument("--report", action="store_true", help="print the table from saved rows, run nothing")
    ap.add_argument("--compare", action="store_true",
                    help="run nothing; compare the two prompts' saved rows, problem by problem (--votes 7)")
    args = ap.parse_args()
    from complm_cli.compose import votes

    temperature = votes.TEMPERATURE if args.temperature is None else args.temperature
    args.out_dir.mkdir(parents=True, exist_ok=True)
    out = args.out_dir / f"t{temperature:g}-{args.prompt}.jsonl"
    if args.compare:
        compare(args.out_dir, temperature)
        return
    if not args.report:
        run(draw(args.n), out, args.samples, temperature, word=args.prompt == "word")
    report(out, f"temperature {temperature:g}, sampled plans from the {args.prompt} prompt")


# The experiment of --prompt word: the sampled plans of a vote (the greedy plan was calculations alone, so
# the question is a word problem) get a prompt made for word problems. Written for complm, not taken from
# a dataset. On 100 tuning problems it won (63% against 58%); on the 100 held-out ones it lost (63% against
# 70%), so complm samples with the planner's own prompt.
WORD_SYSTEM = (
    "You turn a math word problem into a short plan written like Python. Each line sets one variable to a formula "
    "over the numbers the problem gives and earlier variables (+ - * / ** round min max); "
    "solve(\"equation\", ..., \"name\") gives the value of name that makes the equations true.\n"
    "Use every number the problem gives where it belongs: per item, per hour, per day and per week mean "
    "multiplying; a percent p of x is x * p / 100; a fraction of what is left applies to what is left. "
    "The last line computes exactly the quantity the question asks for. Reply with the plan only."
)
WORD_EXAMPLES = [
    ("A printer prints 12 pages a minute. How many minutes does it take to print 5 reports of 36 pages each?",
     "pages = 5 * 36\nminutes = pages / 12"),
    ("A jacket costs $80. It is on sale for 25% off, and a 10% tax is then added to the sale price. "
     "How much does the jacket cost?",
     "sale = 80 - 80 * 25 / 100\ntotal = sale + sale * 10 / 100"),
    ("Maria had 60 stickers. She gave a third of them to her brother and then half of the rest to her friend. "
     "How many stickers does she have left?",
     "rest = 60 - 60 / 3\nleft = rest - rest / 2"),
    ("Sam has 20 books. Tom has 8 fewer books than Sam, and Lisa has 3 times as many books as Tom. "
     "How many books do Lisa and Tom have together?",
     "tom = 20 - 8\nlisa = 3 * tom\ntogether = lisa + tom"),
    ("Ben works 6 hours a day, 5 days a week, and earns $15 an hour. He spends $120 of each week's pay on rent. "
     "How much does he keep in 4 weeks?",
     "weekly = 6 * 5 * 15\nkept = 4 * (weekly - 120)"),
    ("A baker sells muffins for $2 each and cookies for $0.50 each. He sold 3 dozen muffins and twice as many "
     "cookies as muffins. How much money did he make?",
     "muffins = 3 * 12\ncookies = 2 * muffins\nmoney = muffins * 2 + cookies * 0.5"),
    ("Anna is 4 times as old as her daughter. In 20 years she will be twice as old as her daughter. "
     "How old is Anna now?",
     'anna = solve("a = 4 * d", "a + 20 = 2 * (d + 20)", "a")'),
]


@contextmanager
def word_prompt(on: bool):
    """While on, the planner's prompt is WORD_SYSTEM and WORD_EXAMPLES (as bench/equations.py swaps it:
    planner_messages reads them at each call)."""
    from complm_cli.compose import prompts

    shipped = prompts.PLANNER_SYSTEM, list(prompts.PLANNER_EXAMPLES)
    if on:
        prompts.PLANNER_SYSTEM, prompts.PLANNER_EXAMPLES[:] = WORD_SYSTEM, WORD_EXAMPLES
    try:
        yield
    finally:
        prompts.PLANNER_SYSTEM, prompts.PLANNER_EXAMPLES[:] = shipped


@contextmanager
def swapped(owner, **values):
    """While inside, each named attribute of `owner` (a module) is the value given; then the old one again."""
    old = {name: getattr(owner, name) for name in values}
    for name, value in values.items():
        setattr(owner, name, value)
    try:
        yield
    finally:
        for name, value in old.items():
            setattr(owner, name, value)


def run(problems: list[dict], out: Path, samples: int, temperature: float, word: bool = False) -> None:
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
            with word_prompt(word), ThreadPoolExecutor(max_workers=samples) as ex:  # in one batch, as a vote does
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


def as_plan(saved: dict, question: str):
    """A saved plan, replayed: one step that "computes" its saved value (or fails, for a plan of calculations
    whose arithmetic failed); any other plan is a fallback, as it votes not."""
    from complm_cli.compose.dag import Node, Plan, escape_user
    from complm_cli.experts.plugins import tools as registered

    if not saved["fallback"] and all(registered()["calculator"].claims(step) for step in saved["steps"]):
        return Plan(question, [Node(1, _VALUE + (saved["value"] or _FAILS), ())], raw=saved["raw"],
                    tokens=saved["tokens"])
    whole = saved["steps"] == [escape_user(question)]  # the planner wrote no usable plan
    return Plan(question, [Node(1, saved["steps"][0] if whole else "asks a model", ())],
                fallback=saved["fallback"] or (None if whole else "asks a model"), tokens=saved["tokens"])


def replay(row: dict, question: str, n: int):
    """(whether the vote over the row's first `n` plans is right, plans written): vote() on the saved plans."""
    from complm_cli.compose import votes

    plans = [as_plan(x, question) for x in row["plans"]]
    chosen, tally = votes.vote(plans[0], lambda k: plans[k], n, [(None, _Replay())])
    step = chosen.nodes[0].question  # a plan that asks a model scores nothing here
    return step.startswith(_VALUE) and right(step.removeprefix(_VALUE), row["gold"]), len(tally.values) if tally else 1


def questions(rows: list[dict]) -> dict[str, str]:
    lines = DATA.read_text(encoding="utf-8").splitlines()
    return {r["id"]: json.loads(lines[int(r["id"].split("-")[1])])["question"] for r in rows}


def compare(out_dir: Path, temperature: float) -> None:
    """The two prompts' sampled plans on the problems both runs saved: each plan alone, and the vote."""
    rows = {prompt: {r["id"]: r for r in map(json.loads, (out_dir / f"t{temperature:g}-{prompt}.jsonl").read_text()
                                                 .splitlines())}
            for prompt in ("word", "planner")}
    both = sorted(set(rows["word"]) & set(rows["planner"]))
    question = questions([rows["word"][i] for i in both])
    print(f"# {len(both)} problems both runs saved; the sampled plans of each prompt (the greedy plans are the same)")
    right_by = {}
    for prompt, saved in rows.items():
        plans = [(x, saved[i]["gold"]) for i in both for x in saved[i]["plans"][1:]]
        right_by[prompt] = {i: replay(saved[i], question[i], 7)[0] for i in both}
        alone = statistics.fmean(right(x["value"], g) for x, g in plans)
        print(f"{prompt:8} prompt: one sampled plan right {alone:.1%}, "
              f"no value {statistics.fmean(x['value'] is None for x, _ in plans):.1%}, "
              f"uses solve() {statistics.fmean('solve(' in (x['raw'] or '') for x, _ in plans):.1%}, "
              f"{statistics.fmean(x['tokens'] for x, _ in plans):.0f} tokens a plan; "
              f"--votes 7 right on {statistics.fmean(right_by[prompt].values()):.0%}")
    only = {p: sum(right_by[p][i] and not right_by[q][i] for i in both)
            for p, q in (("word", "planner"), ("planner", "word"))}
    print(f"--votes 7: right with the word prompt only {only['word']}, with the planner prompt only {only['planner']}, "
          f"both {sum(right_by['word'][i] and right_by['planner'][i] for i in both)}")


def report(out: Path, label: str) -> None:
    from complm_cli.compose import votes

    rows = [json.loads(line) for line in out.read_text().splitlines()]
    if not rows:
        print("no rows yet")
        return
    question = questions(rows)
    print(f"# {len(rows)} GSM8K tuning problems (lines 0-999, seed 11), {label}")
    print(f"{'policy':40} accuracy  plans written (mean)")
    plain_count = dict(weight=lambda plan, question: 1.0, plain=lambda value, question: True,
                       _unplanned=lambda plan: False, _hopeless=lambda values: False)
    for variant, rules in (("", {}), (", one vote a plan", plain_count)):
        with swapped(votes, **rules):
            for n in (n for n in (1, 3, 5, 7, 9) if n <= min(len(r["plans"]) for r in rows) and (n > 1 or not variant)):
                scores, written = [], []
                for r in rows:
                    score, count = replay(r, question[r["id"]], n)
                    scores.append(score)
                    written.append(count)
                label = "greedy plan alone (--votes 1)" if n == 1 else f"--votes {n}{variant}"
                print(f"{label:40} {statistics.fmean(scores) * 100:7.0f}%  {statistics.fmean(written):.1f}")
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
