"""Sub-query Generator: the planner model writes a plan as lines of Python-like code.

    spider_legs = ask("How many legs does a spider have?")
    dog_legs = ask("How many legs does a dog have?")
    total = 3 * spider_legs + 2 * dog_legs

An `ask` line is a sub-query for an expert ({name} inside it uses an earlier
answer); any other line is a formula for the calculator. Dependencies follow
from the names, so the planner writes none; a coder model writes this form
readily, and it takes fewer tokens than JSON. A reply in the older JSON form
(`{"steps": [{"q": ..., "deps": [...]}]}`) is still read.

The planner's output is untrusted. `parse_plan` turns any text into a Plan
plus a list of problems; deterministic repairs (references written in the
text but not listed, `#1` for `{1}`, a step that says "that painter" without
naming step 1, a comment after a line, `total = letters`, a name written
with other capitals or with spaces, `x += 5`, `$2`, a line that compares,
which is left to the final answer) happen there. A plan that is still
invalid falls back to a single node holding the whole question, and the
fallback is reported. There is no repair round with the model: shown its
plan's problems, the 1.5B planner made none of 18 invalid plans of tuning
questions valid, most often reciting its instructions instead, and 3.4 s
went to each attempt (bench/plan-repairs-results.txt).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Any, Callable

from complm_cli.compose import prompts
from complm_cli.experts import dates
from complm_cli.experts.calculator import FUNCTIONS, outside_quotes, to_formula
from complm_cli.compose.dag import REF_RE as REF
from complm_cli.compose.dag import Node, Plan, references, validate

MAX_NODES = 6
MAX_QUESTION_CHARS = 200
MAX_PLAN_TOKENS = 220
NO_PLAN_LINES = "the reply has no plan lines"

# Words that point back at an earlier answer ("In which country was that
# painter born?"): the planner sometimes writes them without a {N}.
_ANAPHORA = re.compile(
    r"(?:^|\b(?:in|of|was|is|were|are|did|does|do|for|by|from|to|at|on|with|about)\s+)(?:that|this|these|those)\s+[a-z]+"
    r"|\b(?:he|she|him|his|hers|they|them|their|its)\b|\bit\s+(?:was|is|born|located|founded|built|written)\b"
    r"|\bthe (?:above|previous|same|answer)\b",
    re.I,
)


_FIRST_STEP = re.compile(r'^\s*\{\s*"steps"\s*:\s*\[\s*\{\s*"q"\s*:\s*"((?:[^"\\]|\\.)*)"')


_FIRST_ASK = re.compile(r'^\s*(?:```\w*\s*)?[A-Za-z_]\w*\s*=\s*ask\(\s*f?"((?:[^"\\]|\\.)*)"')


def copies_question(partial: str, question: str) -> bool:
    """True once the planner's first step is the whole question, word for word.

    That is how the planner says "a simple question": the rest of the reply
    (`")` or `, "deps": []}]}`) is then known, so generation can stop here."""
    m = _FIRST_ASK.match(partial)
    if m:
        return " ".join(m.group(1).replace('\\"', '"').split()) == " ".join(question.split())
    m = _FIRST_STEP.match(partial)
    if not m:
        return False
    try:
        first = json.loads(f'"{m.group(1)}"')
    except ValueError:
        return False
    return " ".join(first.split()) == " ".join(question.split())


@dataclass
class Parsed:
    plan: Plan
    problems: list[str]


def _load_json(raw: str) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, TypeError, RecursionError):
        pass
    # A model may wrap the JSON in prose or a code fence.
    start, end = raw.find("{"), raw.rfind("}")
    if 0 <= start < end:
        try:
            return json.loads(raw[start : end + 1])
        except (ValueError, RecursionError):
            pass
    return None


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        m = re.fullmatch(r"\s*[#{]?\s*(\d{1,3})\s*}?\s*", value)
        return int(m.group(1)) if m else None
    return None


_LINE = re.compile(r"^\s*([A-Za-z_]\w{0,40})\s*=\s*(.+?)\s*;?\s*$")
_UPDATE = re.compile(r"^\s*([A-Za-z_]\w{0,40})\s*([-+*/])=\s*(.+?)\s*;?\s*$")  # `seashells -= 40`
# `polo shirts = 3 * 26`: a quantity's name of words. One that ask() sets (`bin Laden = ask("Who is ...")`) names an
# entity instead, and the plans that did so asked the wrong thing (3 of 289 fact plans): that line stays unread. So
# does prose (`let x = 5`; `This means x = 8` after the plan would add a step).
_PROSE = r"(?i:let|set|print|return|then|so|and|step|this|that|the|note|therefore|thus|hence|which|where|here|now" \
         r"|final|answer|it|we|i)\b"
_SPACED = re.compile(r"^\s*(?!" + _PROSE + r")([A-Za-z_]\w*(?:[ \t]+[A-Za-z_]\w*){1,3})\s*=(?!=)(?!\s*ask\()")
_ASK = re.compile(r"^ask\(\s*f?([\"'])(.*)\1\s*\)$")
_NAME = re.compile(r"\b[A-Za-z_]\w*\b")
_CONSTANT = re.compile(r"-?(?:\d[\d,]*(?:\.\d+)?|\.\d+)")
_DOLLAR = re.compile(r"\$\s*(?=\.?\d)")  # `cost = $2.50`: the amount
# A comparison (`greater = spider_legs > hexagon_sides`) is the aggregator's
# work, which sees every answer; the calculator only does arithmetic.
_COMPARES = re.compile(r"[<>]|[=!]=|\b(?:and|or|not)\b")
_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')


def _code(line: str) -> str:
    """The line without a trailing `# comment` (a # inside a string, or a `#1` reference, stays)."""
    quote = None
    for i, c in enumerate(line):
        if quote:
            quote = None if c == quote and line[i - 1] != "\\" else quote
        elif c in "\"'":
            quote = c
        elif c == "#" and i and line[i - 1].isspace() and not line[i + 1 : i + 2].isdigit():
            return line[:i].rstrip()
    return line


_FUNCTIONS = frozenset({*FUNCTIONS, "int", "float"})  # the calculator's, and casts a plan may write around them


class _PlanLines:
    """What the plan's lines so far have set: the parser's state, one line at a time."""

    def __init__(self, notes: list[str]):
        self.notes = notes
        self.steps: list[tuple[str, list[int]]] = []
        self.problems: list[str] = []
        self.names: dict[str, int] = {}  # a name -> the step that sets it
        self.consts: dict[str, str] = {}  # `april = 48`: a name -> its number
        self.compared: set[str] = set()

    @staticmethod
    def _capitals(word: str, among: dict) -> str | None:
        same = [n for n in among if n.lower() == word.lower()]
        return same[0] if len(same) == 1 else None

    def known(self, word: str) -> str | None:
        """The step name `word` means: itself, or else the one step name that differs only in capitals."""
        if word in self.names:
            return word
        if word in self.consts or word in _FUNCTIONS:
            return None  # `max` is the function, even where a step is called `Max`
        return self._capitals(word, self.names)

    def constant(self, word: str, formula: bool = True) -> str | None:
        """The number a name stands for (`april = 48`), unless it names a step."""
        name = word if word in self.consts else None if self.known(word) is not None else self._capitals(word, self.consts)
        if name is None:
            return None
        value = self.consts[name]
        if not formula:
            return value.strip("'")  # a date inside an ask's words is the date, unquoted
        return f"({value})" if value.startswith("-") else value  # -.5 ** 2 is not (-.5) ** 2

    def step(self, word: str) -> str | None:
        """`{N}` for the step a name sets, else None."""
        name = self.known(word)
        return None if name is None else "{%d}" % self.names[name]

    def add(self, name: str, rhs: str) -> None:
        """One `name = rhs` line."""
        ask = _ASK.match(rhs)
        if not ask:
            # Only outside an ask's text: "How many apples ..." keeps its words where `apples = 5` was set.
            rhs = self._names(_DOLLAR.sub("", rhs), lambda w: self.constant(w.group(0)) or w.group(0))
            if _COMPARES.search(_QUOTED.sub("", rhs)):
                self.compared.add(name)  # no step: a later line that uses it is an unknown name
                self.names.pop(name, None)
                self.consts.pop(name, None)
                self.notes.append(f"'{name} = {rhs[:40]}' compares, which the final answer does; it is no step")
                return
            alias = self.known(rhs)
            if alias is not None:
                self.names[name] = self.names[alias]  # `total = letters` is no step: the name means the same answer
                return
        if _CONSTANT.fullmatch(rhs) and name not in self.names:
            self.consts[name] = rhs.replace(",", "")  # `april = 48` is no step: the number goes where the name is used
            return
        if _QUOTED.fullmatch(rhs) and dates.is_date(rhs) and name not in self.names:
            self.consts[name] = f"'{rhs[1:-1]}'"  # `start = "2024-01-15"`: a date is a value too, not a question
            return
        index = len(self.steps) + 1
        text = self._ask(ask.group(2), index) if ask else self._formula(rhs, index)
        self.steps.append((" ".join(text.split()), sorted(references(text))))
        self.names[name] = index
        self.consts.pop(name, None)  # `clips = 48`, then `clips = clips + 24`: later lines mean the step

    def _ask(self, text: str, index: int) -> str:
        def ref(match: re.Match) -> str:
            key = match.group(1)
            if (found := self.step(key)) is not None:
                return found
            if not key.isdigit():
                self.problems.append(f"step {index} uses {{{key}}}, which no earlier line sets")
            return match.group(0)

        text = text.replace('\\"', '"')
        text = re.sub(r"\{([A-Za-z_]\w*)\}", lambda c: self.constant(c.group(1), formula=False) or c.group(0), text)
        return re.sub(r"\{([A-Za-z_]\w*|\d+)\}", ref, text)

    @staticmethod
    def _names(rhs: str, change) -> str:
        """`change` on each name of a formula, but not on the words of a quoted date; the equations given to
        solve() are formulas too (an earlier step's name in one means its answer)."""
        if "solve(" in rhs:
            return _NAME.sub(change, rhs)
        return outside_quotes(rhs, lambda part: _NAME.sub(change, part))

    def _formula(self, rhs: str, index: int) -> str:
        words = _NAME.findall(_QUOTED.sub("", rhs))  # not the words of a quoted date
        unknown = [w for w in words if self.known(w) is None and w not in _FUNCTIONS and not w.isdigit()]
        if unknown:
            self.problems.append(f"step {index} uses '{unknown[0]}', which no earlier line sets"
                                 + (" (a comparison, which the final answer makes)" if unknown[0] in self.compared else ""))
        text = self._names(rhs, lambda w: self.step(w.group(0)) or w.group(0))
        text = re.sub(r"\)\.days\b", ")", text)  # `(end - start).days`: a date minus a date is already its days
        return re.sub(r"\b(?:int|float)\(", "(", text)


def parse_lines(question: str, raw: str, notes: list[str] | None = None) -> tuple[list[tuple[str, list[int]]], list[str]]:
    """Plan lines -> (step text with {N} references, its dependencies), and the problems found.

    `notes` gets a line for each line of the plan that is left out (a comparison)."""
    plan = _PlanLines([] if notes is None else notes)
    spaced: dict[str, str] = {}  # `clips April` -> clips_April, once a line has set it
    for line in raw.replace("\r", "").split("\n"):
        line = _code(line.strip())
        if plan.steps and (not line or line.startswith("```")):
            break  # the plan is over; what follows is commentary
        if not line or line.startswith(("#", "```", "print(", "return")):
            continue
        line = _plain_names(line, spaced, plan.notes)
        m = _LINE.match(line)
        if not m and plan.steps:
            break
        if not m:
            plan.problems.append(f"line '{line[:60]}' is neither name = ask(\"...\") nor name = formula")
            continue
        plan.add(m.group(1), m.group(2))
    if not plan.steps and plan.consts and not plan.problems:
        plan.steps.append((list(plan.consts.values())[-1], []))  # a plan that only states a number
    if not plan.steps and not plan.problems:
        plan.problems.append(NO_PLAN_LINES)
    return plan.steps, plan.problems


def _plain_names(line: str, spaced: dict[str, str], notes: list[str]) -> str:
    """A line with a coder model's slips in naming undone: a name of words with spaces between them
    (`clips April = 48`, and later uses of it) becomes one name joined by _, and `name += x` becomes
    `name = name + (x)`, a new step that later lines mean by the name."""
    for words, name in spaced.items():
        said = r"\s+".join(map(re.escape, words.split()))
        line = outside_quotes(line, lambda part, said=said, name=name:
                              re.sub(r"(?<!\w)" + said + r"(?!\w)", name, part))
        line = re.sub(r"\{\s*" + said + r"\s*\}", "{%s}" % name, line)  # `ask("Who sells {polo shirts}?")` too
    m = _SPACED.match(line)
    if m:
        words = m.group(1).split()
        name = "_".join(words)
        spaced[" ".join(words)] = name
        notes.append(f"the name '{' '.join(words)}' was read as {name}")
        line = name + line[m.end(1):]
    m = _UPDATE.match(line)
    if m:
        name, op, rhs = m.groups()
        notes.append(f"'{line[:60]}' was read as {name} = {name} {op} ({rhs[:40]})")
        line = f"{name} = {name} {op} ({rhs})"
    return line


def parse_plan(question: str, raw: str, max_nodes: int = MAX_NODES, *, lone_step_is_question: bool = True) -> Parsed:
    """Any text in, a Plan and its remaining problems out; never raises.

    `lone_step_is_question=False` keeps a one-step plan's step as written (what
    streaming starts while it waits to see whether a second step follows)."""
    plan = Plan(question=question, nodes=[], raw=raw if isinstance(raw, str) else repr(raw))
    if isinstance(raw, str) and not raw.lstrip().startswith(("{", "[")):
        steps, problems = parse_lines(question, raw, plan.repairs)
        if not steps and _load_json(raw) is not None:
            steps, problems = [], []  # JSON wrapped in prose: read below
        elif not steps:
            return Parsed(plan, ["the planner's reply is not a plan (no name = ask(...) lines, and not JSON)"])
        elif problems:
            plan.nodes = [Node(i, q, tuple(d)) for i, (q, d) in enumerate(steps, 1)]
            return Parsed(plan, problems)
        if steps:
            return _finish(plan, [{"q": q, "deps": d} for q, d in steps], question, max_nodes, lone_step_is_question)
    data = _load_json(raw) if isinstance(raw, str) else None
    if data is None:
        return Parsed(plan, ["the planner's reply is not JSON"])
    steps = data.get("steps") if isinstance(data, dict) else data
    if not isinstance(steps, list) or not steps:
        return Parsed(plan, ["the reply has no list of steps"])
    return _finish(plan, steps, question, max_nodes, lone_step_is_question)


def _finish(plan: Plan, steps: list, question: str, max_nodes: int, lone_step_is_question: bool = True) -> Parsed:
    problems: list[str] = []
    for index, step in enumerate(steps, 1):
        if isinstance(step, str):
            step = {"q": step}
        if not isinstance(step, dict):
            problems.append(f"step {index} is not an object")
            continue
        text = next((step[k] for k in ("q", "question", "query", "sub_query") if isinstance(step.get(k), str)), "")
        text = " ".join(text.split())
        if len(text) > MAX_QUESTION_CHARS:
            text = text[:MAX_QUESTION_CHARS].rsplit(" ", 1)[0]
            plan.repairs.append(f"step {index} was cut to {MAX_QUESTION_CHARS} characters")
        if "#" in text:
            text = re.sub(r"#(\d+)\b", r"{\1}", text)
        raw_deps = next((step[k] for k in ("deps", "depends_on", "dependencies") if k in step), [])
        if not isinstance(raw_deps, list):
            raw_deps = [raw_deps]
        deps = {d for d in (_as_int(x) for x in raw_deps) if d is not None}
        plan.nodes.append(Node(id=index, question=text, depends_on=tuple(sorted(deps))))
    if problems:
        return Parsed(plan, problems)
    _repair(plan)
    if lone_step_is_question and len(plan.nodes) == 1 and not to_formula(plan.nodes[0].question):
        # One step: the question itself is the best sub-query, unless the step is the calculation it asks for.
        plan.nodes = [Node(1, question, ())]
    return Parsed(plan, validate(plan, max_nodes))


def _repair(plan: Plan) -> None:
    """Deterministic fixes that make text references and dependency lists agree."""
    for node in plan.nodes:
        refs = references(node.question)
        deps = set(node.depends_on)
        earlier = {d for d in deps | refs if 1 <= d < node.id}
        dropped = (deps - earlier) - refs
        if dropped:
            plan.repairs.append(f"step {node.id}: dropped dependencies {sorted(dropped)} that do not come before it")
        deps = earlier | (refs - earlier)  # a forward reference in the text stays, and fails validation
        if refs - set(node.depends_on):
            plan.repairs.append(f"step {node.id}: added dependencies {sorted(refs - set(node.depends_on))} named in its text")
        if node.id > 1 and not deps and _ANAPHORA.search(node.question):
            deps = {node.id - 1}
            plan.repairs.append(f"step {node.id}: refers back without naming a step; it now depends on step {node.id - 1}")
        missing = sorted(d for d in deps if d not in refs)
        if missing:
            node.question += " (given " + ", ".join("{%d}" % d for d in missing) + ")"
        node.depends_on = tuple(sorted(deps))
    _drop_repeats(plan)


def _drop_repeats(plan: Plan) -> None:
    """A step that asks exactly what an earlier one asks is dropped; its references point to the earlier one."""
    new_id: dict[int, int] = {}
    seen: dict[tuple[str, tuple[int, ...]], int] = {}
    nodes: list[Node] = []

    def renumber(m: re.Match) -> str:
        k = int(m.group(1) or m.group(2))
        return "{%d}" % new_id[k] if k in new_id else m.group(0)

    for node in plan.nodes:
        text = REF.sub(renumber, node.question)
        deps = tuple(sorted({new_id.get(d, d) for d in node.depends_on}))
        key = (" ".join(text.lower().split()), deps)
        if key in seen:
            plan.repairs.append(f"step {node.id} repeated step {seen[key]} and was dropped")
            new_id[node.id] = seen[key]
            continue
        new_id[node.id] = seen[key] = len(nodes) + 1
        nodes.append(Node(len(nodes) + 1, text, deps))
    plan.nodes = nodes


_STOP = frozenset("""what which who whom whose when where why how many much does did do is are was were the a an of in on at to for
from by with and or that this these those there their its it be been has have had into than then also about after before
between during over under same other each every some any""".split())


def _content(text: str) -> set[str]:
    """Content words, cut to 5 letters so that 'spiders' matches 'spider'."""
    return {w[:5] for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in _STOP and len(w) > 2}


def ungrounded(plan: Plan, question: str) -> list[int]:
    """Steps that share no content word with the question: taken from elsewhere (the planner's examples)."""
    asked = _content(question)
    return [n.id for n in plan.nodes
            if not to_formula(n.question) and not (_content(REF.sub(" ", n.question)) & asked)]


def _grounding(parsed: Parsed, question: str) -> Parsed:
    if not parsed.problems and (bad := ungrounded(parsed.plan, question)):
        parsed.problems.append(f"step {bad[0]} is not about the question")
    return parsed


def plan_finished(partial: str) -> bool:
    """True once a line-form plan is followed by a blank line, a closing fence or prose: the rest is not plan."""
    if partial.lstrip().startswith(("{", "[")):
        return False
    lines = partial.replace("\r", "").split("\n")[:-1]  # complete lines only
    seen = False
    for line in (x.strip() for x in lines):
        if seen and line.startswith("#"):
            continue  # a comment between steps: the plan may go on (parse_lines skips it)
        if seen and (not line or line.startswith("```") or not _plan_line(line)):
            return True
        seen = seen or _plan_line(line)
    return False


def _plan_line(line: str) -> bool:
    """A line parse_lines reads as a step (with the slips _plain_names undoes), so the plan goes on."""
    return bool(_LINE.match(line) or _UPDATE.match(line) or _SPACED.match(line))


Generate = Callable[[list[dict]], tuple[str, int]]  # messages -> (text, tokens)


def make_plan(question: str, generate: Generate, max_nodes: int = MAX_NODES) -> Plan:
    """Ask the planner; a plan that is invalid after the deterministic repairs falls back to one node."""
    start = time.perf_counter()
    # Plan lines need no grammar: free text decodes about 1.7x faster, and parse_plan reads anything.
    raw, tokens = generate(prompts.planner_messages(question))
    parsed = _grounding(parse_plan(question, raw, max_nodes), question)
    if parsed.problems:
        plan = single_node(question, f"the planner's plan was invalid ({'; '.join(parsed.problems)})")
        plan.raw = raw
    else:
        plan = parsed.plan
    plan.seconds = time.perf_counter() - start
    plan.tokens = tokens
    return plan


def single_node(question: str, reason: str | None = None) -> Plan:
    return Plan(question=question, nodes=[Node(1, question, ())], fallback=reason)
