"""Plan forms that write fewer tokens: do they keep the planner's plans?

    python bench/plan_forms.py [--gsm8k 6] [--hotpotqa 10]

The planner (the default experts' qwen2.5-coder-1.5b) plans the same
questions under three prompts that differ only in how a sub-question is
written:

- `ask`: today's form, `painter = ask("Who painted the Mona Lisa?")`;
- `colon`: `painter: Who painted the Mona Lisa?` (about 5 tokens fewer on a
  two-part plan);
- `whole`: today's form, but a simple question is `answer = ask(question)`
  instead of a copy of it (5 tokens instead of 12 or more).

Questions: GSM8K training lines 0-999 (the lines prompts may be written
with; drawn with seed 5), the first HotpotQA training questions, and this
benchmark's own fan-outs and simple questions. Per form it prints each raw
plan and its tokens, then totals: tokens, plans of two or more steps, and
lines in neither form (an answer written instead of a question, or copied
instructions). Output of the README's run: `plan-forms-results.txt`.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from pathlib import Path

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
OWN = [
    "Who painted the Mona Lisa, and what is the chemical symbol for gold?",
    "How many legs does a spider have, and how many sides does a hexagon have?",
    "In which country was the painter of The Starry Night born?",
    "What is the capital of Japan?",
    "Who wrote Pride and Prejudice?",
    "How many legs does a spider have?",
]
ASK = re.compile(r'^\w+ = ask\((?:"[^"]*"|question)\)$')
COLON = re.compile(r"^\w+: .+\?$")
FORMULA = re.compile(r"^\w+ = [\w\s.*/+()\-]+$")


def forms():
    from complm_cli.compose import prompts

    system, examples = prompts.PLANNER_SYSTEM, list(prompts.PLANNER_EXAMPLES)
    colon = [(q, re.sub(r'^(\w+) = ask\("(.*)"\)$', r"\1: \2", p, flags=re.M)) for q, p in examples]
    colon_system = (system.replace('- name = ask("sub-question") asks', "- name: sub-question asks")
                    .replace("in its own ask line", "in its own question line")
                    .replace("is one ask line", "is one question line"))
    whole = examples[:-1] + [(examples[-1][0], "answer = ask(question)")]
    whole_system = system.replace("A simple question is one ask line.",
                                  "A simple question is the line answer = ask(question), which asks it whole.")
    return {"ask": (system, examples), "colon": (colon_system, colon), "whole": (whole_system, whole)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gsm8k", type=int, default=6)
    parser.add_argument("--hotpotqa", type=int, default=10)
    opts = parser.parse_args()

    from complm_cli.compose import prompts
    from complm_cli.cache.config import load_settings
    from complm_cli.compose.session import Session

    with open(DATA / "gsm8k_train" / "train.jsonl", encoding="utf-8") as f:
        tuning = f.readlines()[:1000]
    questions = [json.loads(line)["question"] for line in random.Random(5).sample(tuning, opts.gsm8k)]
    with open(DATA / "hotpotqa_train_100_distractor" / "hotpotqa_train.json", encoding="utf-8") as f:
        questions += [row["question"] for row in json.load(f)[: opts.hotpotqa]]
    questions += OWN

    session = Session(load_settings(), modes=("parallel",))
    totals = {}
    try:
        for name, (system, examples) in forms().items():
            prompts.PLANNER_SYSTEM, prompts.PLANNER_EXAMPLES[:] = system, examples
            tokens = split = stray = 0
            print(f"=== form '{name}'")
            for question in questions:
                raw, n = session._generate(session.planner, prompts.planner_messages(question), max_tokens=220,
                                           temperature=0.0, prefix=prompts.planner_prefix_length())
                lines = [line.strip() for line in raw.strip().splitlines() if line.strip()]
                asks = [line for line in lines if ASK.match(line) or (name == "colon" and COLON.match(line))]
                odd = [line for line in lines if line not in asks and not FORMULA.match(line)]
                tokens, split, stray = tokens + n, split + (len(lines) >= 2), stray + len(odd)
                print(f"--- {n} tokens | {question[:90]!r}\n{raw.strip()}")
            totals[name] = (tokens, split, stray)
    finally:
        session.close()
    print(f"\n{len(questions)} questions")
    for name, (tokens, split, stray) in totals.items():
        print(f"form {name:6} tokens {tokens:5}  plans of 2+ steps {split:3}  lines in neither form {stray:3}")


if __name__ == "__main__":
    sys.exit(main())
