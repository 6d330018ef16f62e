"""Every prompt complm sends, in one place a user can read and change.

The planner's examples are written for complm (not copied from a dataset);
their shapes follow the multi-hop decompositions in MuSiQue, HotpotQA and
StrategyQA: independent look-ups (a fan-out) and chains where a later step
names an earlier answer as {N}. Arithmetic is written as a formula step
(`{1} + {2}`) that the calculator expert computes exactly; comparing is left
to the aggregator, which sees every answer: that keeps plans short, and short
plans are cheap to generate.
"""

from __future__ import annotations

import re

_THINK = re.compile(r"<think>.*?(</think>|$)", re.S)


def strip_reasoning(text: str) -> str:
    """Drop a reasoning model's <think> block: the answer is what follows it."""
    return _THINK.sub("", text).strip()

PLANNER_SYSTEM = (
    "You turn a question into a short plan written like Python. Each line sets one variable:\n"
    "- name = ask(\"sub-question\") asks an expert one simple question that makes sense on its own; "
    "write {other_name} inside the text to use an earlier answer.\n"
    "- name = formula computes arithmetic exactly, over the numbers the question gives and earlier variables "
    "(+ - * / ** round min max), and dates written \"2024-01-15\" (days(a, b), years(a, b), add_days(date, n), weekday(date)); "
    "solve(\"equation\", ..., \"name\") gives the value of name that makes the equations true.\n"
    "Ask for each fact the question does not give (such as how many legs an animal has) in its own ask line. "
    "Use the fewest lines. A simple question is one ask line. Do not ask a question that only compares earlier answers. "
    "Reply with the plan only."
)

# (question, plan): each line is `name = ask("...")` or `name = formula`.
# Written for complm, not taken from a dataset.
PLANNER_EXAMPLES: list[tuple[str, str]] = [
    ("In which country was the author of Don Quixote born?",
     'author = ask("Who wrote Don Quixote?")\ncountry = ask("In which country was {author} born?")'),
    ("Who painted the Mona Lisa, and what is the largest ocean on Earth?",
     'painter = ask("Who painted the Mona Lisa?")\nocean = ask("What is the largest ocean on Earth?")'),
    ("How many legs do three spiders and two dogs have in total?",
     'spider_legs = ask("How many legs does a spider have?")\ndog_legs = ask("How many legs does a dog have?")\n'
     "total = 3 * spider_legs + 2 * dog_legs"),
    ("Who was born first, Mozart or Beethoven?",
     'mozart = ask("When was Mozart born?")\nbeethoven = ask("When was Beethoven born?")'),
    ("Tom buys 3 notebooks at $4 each and a pen for $2, and pays with a $20 bill. How much change does he get?",
     "notebooks = 3 * 4\ncost = notebooks + 2\nchange = 20 - cost"),
    ("How many years passed between the first Moon landing and the fall of the Berlin Wall?",
     'landing = ask("In what year was the first Moon landing?")\nwall = ask("In what year did the Berlin Wall fall?")\n'
     "passed = wall - landing"),
    ("Write a Python function that checks whether a number is prime.",
     'code = ask("Write a Python function that checks whether a number is prime.")'),
    ("A shop sells 14 boxes of tea a day for 6 days, then gives away a quarter of them. How many boxes does it keep?",
     "sold = 14 * 6\nkept = sold - sold / 4"),
    ("In what year was the band that recorded the album Definitely Maybe formed?",
     'band = ask("Which band recorded the album Definitely Maybe?")\nyear = ask("In what year was {band} formed?")'),
    ("What is the longest river in the country whose capital is Nairobi?",
     'country = ask("Which country has Nairobi as its capital?")\nriver = ask("What is the longest river in {country}?")'),
    ("Anna is 4 times as old as her daughter. In 20 years she will be twice as old as her daughter. How old is Anna now?",
     'anna = solve("a = 4 * d", "a + 20 = 2 * (d + 20)", "a")'),
    ("How old was Neil Armstrong when he walked on the Moon on 1969-07-20?",
     'born = ask("On what date was Neil Armstrong born?")\nage = years(born, "1969-07-20")'),
    # A simple question stays one line; it comes last so the model does not learn to copy first.
    ("What is the capital of Japan?", 'capital = ask("What is the capital of Japan?")'),
]


def planner_messages(question: str) -> list[dict]:
    messages = [{"role": "system", "content": PLANNER_SYSTEM}]
    for example, plan in PLANNER_EXAMPLES:
        messages.append({"role": "user", "content": example})
        messages.append({"role": "assistant", "content": plan})
    messages.append({"role": "user", "content": question})
    return messages


def planner_prefix_length() -> int:
    """Messages at the start of every planner prompt (system and examples): cached as model state."""
    return 1 + 2 * len(PLANNER_EXAMPLES)


# Measured on the 1.5B and 0.5B models: asking for "a name or a number" only
# made them drop units and get facts wrong ("100" for water's boiling point in
# Fahrenheit); asking for the key fact with its units kept answers short and right.
EXPERT_SYSTEM = (
    "You are a helpful assistant. Give a short, accurate answer that includes the key fact, "
    "with units where they apply. For a programming question, give a short code block."
)


# A parent of a calculation: its number is read out of the answer, so the answer must state one.
NUMERIC_HINT = " Answer in one short sentence that states the number."
# A date a calculation counts from ("On what date was ... born?") must come whole: a year alone is no date.
DATE_HINT = " Answer in one short sentence that states the full date (day, month and year)."
_ASKS_DATE = re.compile(r"\b(?:date|day)\b", re.I)
_QUANTITY = re.compile(r"^\s*(?:how (?:many|much|old|far|long|tall|high|deep|big|heavy|fast|large)\b|(?:in )?(?:what|which) year\b"
                       r"|when (?:was|were|did|is)\b|what (?:is|was|are|were) the (?:number|population|age|height|length|distance"
                       r"|area|speed|price|cost|weight|temperature|year|date|size|value)\b)", re.I)


def asks_for_number(question: str) -> bool:
    """A sub-question whose answer is a quantity: a step the planner has not finished may get a calculation after it."""
    return bool(_QUANTITY.match(question))


def expert_messages(question: str, context: list[tuple[str, str]], numeric: bool = False) -> list[dict]:
    """`context`: (earlier sub-question, its answer) pairs this question builds on."""
    content = question
    if context:
        facts = "\n".join(f"- {q} {a}" for q, a in context)
        content = f"Facts from earlier steps:\n<<<\n{facts}\n>>>\n\nQuestion: {question}"
    hint = (DATE_HINT if _ASKS_DATE.search(question) else NUMERIC_HINT) if numeric else ""
    return [{"role": "system", "content": EXPERT_SYSTEM + hint}, {"role": "user", "content": content}]


AGGREGATOR_SYSTEM = (
    "You write the final answer to a question from the answers to its sub-questions. "
    "Use the sub-answers as facts; do any comparison or arithmetic the question needs, step by step if it helps, "
    "then give the answer. Be brief and direct. If a sub-answer is missing, say what could not be found."
)
# Told to every aggregation, "begin with Yes or No" made the 1.5B model answer
# "No." to "How many ...?" questions; so it is said only to yes/no questions.
YES_NO_HINT = " Begin the answer with Yes or No."
_YES_NO_QUESTION = re.compile(r"^\s*(is|are|was|were|do|does|did|can|could|has|have|had|will|would|should|shall)\b", re.I)


def is_yes_no(question: str) -> bool:
    return bool(_YES_NO_QUESTION.match(question))


# Words that ask to combine or compare parts: such a fan-out needs the aggregator.
_COMBINES = re.compile(
    r"\b(or|than|both|either|neither|same|compare[ds]?|comparison|differen(?:ce|t)|total|sum|together|altogether|combined|"
    r"first|last|earlier|later|older|younger|more|less|fewer|most|least|bigger|smaller|larger|longer|shorter|higher|lower)\b",
    re.I,
)


# "Which is heavier, an elephant or a hippo?": the answer is a name, whatever a calculation over the parts found.
_CHOICE = re.compile(r"^\s*(?:which|who|whom|whose|what|where)\b[^?]*\bor\b", re.I)
# "What is the tallest mountain in Africa, and how tall is it?": a second question in the same sentence.
_SECOND_QUESTION = re.compile(r"(?:,|;)?\s+and\s+(?:what|who|whom|whose|when|where|which|why|how)\b", re.I)


def asks_for_choice(question: str) -> bool:
    """A question answered with yes or no, or with one of the things it names: not with a number."""
    return is_yes_no(question) or bool(_CHOICE.match(question))


def asks_several(question: str) -> bool:
    """A question that asks two or more things, each of which the answer must state."""
    return bool(_SECOND_QUESTION.search(question)) or question.count("?") > 1


def combines_parts(question: str) -> bool:
    """A question whose parts' answers must be combined (compared, added, both checked), not only listed."""
    return bool(_COMBINES.search(question)) or is_yes_no(question)


def aggregator_messages(question: str, parts: list[tuple[str, str | None]]) -> list[dict]:
    """`parts`: (sub-question, answer or None when that node failed)."""
    lines = []
    for i, (q, a) in enumerate(parts, 1):
        lines.append(f"{i}. {q}\n   Answer: {a if a is not None else '(missing: this step failed)'}")
    content = f"Question: {question}\n\nSub-questions and their answers:\n" + "\n".join(lines) + "\n\nFinal answer:"
    system = AGGREGATOR_SYSTEM + (YES_NO_HINT if is_yes_no(question) else "")
    return [{"role": "system", "content": system}, {"role": "user", "content": content}]


# The monolithic baseline gets the same instruction as an expert, so the modes differ only in composition.
MONOLITHIC_SYSTEM = EXPERT_SYSTEM


def monolithic_messages(question: str) -> list[dict]:
    return [{"role": "system", "content": MONOLITHIC_SYSTEM}, {"role": "user", "content": question}]


# A knowledge expert's reader (compose/knowledge.py) answers from passages only; what it says when they
# do not hold the answer is fixed, so complm can tell that apart from an answer.
NOT_IN_CORPUS = "Not in the corpus."
READER_SYSTEM = (
    "Read the numbered passages, then answer the question from the facts they give, connecting them where the "
    "question needs two. If the passages say nothing about the question's subject, reply exactly: "
    f"{NOT_IN_CORPUS} "
)
# A step's answer is put into later steps' questions in place of {N}: the answer alone reads right there.
READER_STEP = "Reply with the answer alone: a name, a place, a date or a number, in a few words."
READER_WHOLE = "Reply in one short sentence that names the answer."
_NOT_FOUND = re.compile(r"not in the corpus|passages? (do|does) not (say|mention|contain|state|answer|provide)|"
                        r"no (information|mention)", re.I)


def reader_messages(question: str, passages: list[tuple[str, str]], context: list[tuple[str, str]] = (),
                    step: bool = True) -> list[dict]:
    """`passages`: (title, text) in the order retrieved; `context`: earlier steps' (question, answer); `step`:
    a plan's step (else the whole question, answered directly)."""
    numbered = "\n".join(f"[{i}] {title + ': ' if title else ''}{text}" for i, (title, text) in enumerate(passages, 1))
    facts = "\n".join(f"- {q} {a}" for q, a in context)
    known = f"Facts from earlier steps:\n{facts}\n\n" if facts else ""
    return [{"role": "system", "content": READER_SYSTEM + (READER_STEP if step else READER_WHOLE)},
            {"role": "user", "content": f"Passages:\n{numbered}\n\n{known}Question: {question}"}]


def says_not_found(answer: str) -> bool:
    """Whether a reader said its passages do not answer the question."""
    return bool(_NOT_FOUND.search(answer[:200]))
