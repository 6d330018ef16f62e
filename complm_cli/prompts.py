"""Every prompt complm sends, in one place a user can read and change.

The planner's examples are written for complm (not copied from a dataset);
their shapes follow the multi-hop decompositions in MuSiQue, HotpotQA and
StrategyQA: independent look-ups (a fan-out) and chains where a later step
names an earlier answer as {N}. Plans leave combining and comparing to the
aggregator, which sees every answer: that keeps plans short, and short plans
are cheap to generate.
"""

from __future__ import annotations

import json
import re

_THINK = re.compile(r"<think>.*?(</think>|$)", re.S)


def strip_reasoning(text: str) -> str:
    """Drop a reasoning model's <think> block: the answer is what follows it."""
    return _THINK.sub("", text).strip()

PLANNER_SYSTEM = (
    "You split a question into the fewest simple sub-questions that answer it. "
    "Each sub-question asks for one fact or one calculation and must make sense on its own. "
    "If a sub-question needs an earlier answer, write {N} for answer N in its text and list N in deps. "
    "Do not add a step that only combines or compares earlier answers. "
    "A simple question is a single step. Reply with JSON only."
)

# (question, steps): each step is (sub-question, deps).
PLANNER_EXAMPLES: list[tuple[str, list[tuple[str, list[int]]]]] = [
    (
        "In which country was the author of Don Quixote born?",
        [("Who wrote Don Quixote?", []), ("In which country was {1} born?", [1])],
    ),
    (
        "Who painted the Mona Lisa, and what is the largest ocean on Earth?",
        [("Who painted the Mona Lisa?", []), ("What is the largest ocean on Earth?", [])],
    ),
    (
        "Who was born first, Mozart or Beethoven?",
        [("When was Mozart born?", []), ("When was Beethoven born?", [])],
    ),
    (
        "How many years after the fall of the Berlin Wall did the country where it stood host the FIFA World Cup?",
        [("In what year did the Berlin Wall fall?", []), ("In which country did the Berlin Wall stand?", []),
         ("In what year after {1} did {2} host the FIFA World Cup?", [1, 2])],
    ),
    (
        "Write a Python function that checks whether a number is prime.",
        [("Write a Python function that checks whether a number is prime.", [])],
    ),
    (
        "What is the longest river in the country whose capital is Nairobi?",
        [("Which country has Nairobi as its capital?", []), ("What is the longest river in {1}?", [1])],
    ),
    # A simple question stays one step; it comes last so the model does not learn to copy first.
    ("What is the capital of Japan?", [("What is the capital of Japan?", [])]),
]


def plan_json(steps: list[tuple[str, list[int]]]) -> str:
    return json.dumps({"steps": [{"q": q, "deps": deps} for q, deps in steps]}, ensure_ascii=False)


def planner_messages(question: str) -> list[dict]:
    messages = [{"role": "system", "content": PLANNER_SYSTEM}]
    for example, steps in PLANNER_EXAMPLES:
        messages.append({"role": "user", "content": example})
        messages.append({"role": "assistant", "content": plan_json(steps)})
    messages.append({"role": "user", "content": question})
    return messages


def planner_prefix_length() -> int:
    """Messages at the start of every planner prompt (system and examples): cached as model state."""
    return 1 + 2 * len(PLANNER_EXAMPLES)


def planner_repair(problems: list[str]) -> str:
    return "That plan is not valid: " + "; ".join(problems) + ". Reply with a corrected plan as JSON only."


# Measured on the 1.5B and 0.5B models: asking for "a name or a number" only
# made them drop units and get facts wrong ("100" for water's boiling point in
# Fahrenheit); asking for the key fact with its units kept answers short and right.
EXPERT_SYSTEM = (
    "You are a helpful assistant. Give a short, accurate answer that includes the key fact, "
    "with units where they apply. For a programming question, give a short code block."
)


def expert_messages(question: str, context: list[tuple[str, str]]) -> list[dict]:
    """`context`: (earlier sub-question, its answer) pairs this question builds on."""
    content = question
    if context:
        facts = "\n".join(f"- {q} {a}" for q, a in context)
        content = f"Facts from earlier steps:\n<<<\n{facts}\n>>>\n\nQuestion: {question}"
    return [{"role": "system", "content": EXPERT_SYSTEM}, {"role": "user", "content": content}]


AGGREGATOR_SYSTEM = (
    "You write the final answer to a question from the answers to its sub-questions. "
    "Use the sub-answers as facts; do any comparison or arithmetic the question needs, step by step if it helps, "
    "then give the answer. Be brief and direct. If a sub-answer is missing, say what could not be found."
)
# Told to every aggregation, "begin with Yes or No" made the 1.5B model answer
# "No." to "How many ...?" questions; so it is said only to yes/no questions.
YES_NO_HINT = " Begin the answer with Yes or No."
_YES_NO_QUESTION = re.compile(r"^\s*(is|are|was|were|do|does|did|can|could|has|have|had|will|would|should|shall)\b", re.I)


def aggregator_messages(question: str, parts: list[tuple[str, str | None]]) -> list[dict]:
    """`parts`: (sub-question, answer or None when that node failed)."""
    lines = []
    for i, (q, a) in enumerate(parts, 1):
        lines.append(f"{i}. {q}\n   Answer: {a if a is not None else '(missing: this step failed)'}")
    content = f"Question: {question}\n\nSub-questions and their answers:\n" + "\n".join(lines) + "\n\nFinal answer:"
    system = AGGREGATOR_SYSTEM + (YES_NO_HINT if _YES_NO_QUESTION.match(question) else "")
    return [{"role": "system", "content": system}, {"role": "user", "content": content}]


# The monolithic baseline gets the same instruction as an expert, so the modes differ only in composition.
MONOLITHIC_SYSTEM = EXPERT_SYSTEM


def monolithic_messages(question: str) -> list[dict]:
    return [{"role": "system", "content": MONOLITHIC_SYSTEM}, {"role": "user", "content": question}]
