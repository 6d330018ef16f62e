"""Sub-query Generator: the planner model writes a plan as JSON under a schema.

The planner's output is untrusted. `parse_plan` turns any text into a Plan
plus a list of problems; deterministic repairs (references written in the
text but not listed, `#1` for `{1}`, a step that says "that painter" without
naming step 1) happen there. A plan that is still invalid gets one repair
round with the model, then falls back to a single node holding the whole
question, and the fallback is reported.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Any, Callable

from complm_cli import prompts
from complm_cli.dag import Node, Plan, references, validate

MAX_NODES = 4
MAX_QUESTION_CHARS = 200
MAX_PLAN_TOKENS = 220

# Words that point back at an earlier answer ("In which country was that
# painter born?"): the planner sometimes writes them without a {N}.
_ANAPHORA = re.compile(
    r"(?:^|\b(?:in|of|was|is|were|are|did|does|do|for|by|from|to|at|on|with|about)\s+)(?:that|this|these|those)\s+[a-z]+"
    r"|\b(?:he|she|him|his|hers|they|them|their|its)\b|\bit\s+(?:was|is|born|located|founded|built|written)\b"
    r"|\bthe (?:above|previous|same|answer)\b",
    re.I,
)


_FIRST_STEP = re.compile(r'^\s*\{\s*"steps"\s*:\s*\[\s*\{\s*"q"\s*:\s*"((?:[^"\\]|\\.)*)"')


def copies_question(partial: str, question: str) -> bool:
    """True once the planner's first step is the whole question, word for word.

    That is how the planner says "a simple question": the rest of the reply
    (`, "deps": []}]}`) is then known, so generation can stop here."""
    m = _FIRST_STEP.match(partial)
    if not m:
        return False
    try:
        first = json.loads(f'"{m.group(1)}"')
    except ValueError:
        return False
    return " ".join(first.split()) == " ".join(question.split())


def plan_schema(max_nodes: int = MAX_NODES, max_chars: int = MAX_QUESTION_CHARS) -> dict:
    return {
        "type": "object",
        "properties": {
            "steps": {
                "type": "array",
                "minItems": 1,
                "maxItems": max_nodes,
                "items": {
                    "type": "object",
                    "properties": {
                        "q": {"type": "string", "maxLength": max_chars},
                        "deps": {"type": "array", "items": {"type": "integer"}, "maxItems": max_nodes - 1},
                    },
                    "required": ["q", "deps"],
                },
            }
        },
        "required": ["steps"],
    }


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


def parse_plan(question: str, raw: str, max_nodes: int = MAX_NODES) -> Parsed:
    """Any text in, a Plan and its remaining problems out; never raises."""
    plan = Plan(question=question, nodes=[], raw=raw if isinstance(raw, str) else repr(raw))
    data = _load_json(raw) if isinstance(raw, str) else None
    if data is None:
        return Parsed(plan, ["the planner's reply is not JSON"])
    steps = data.get("steps") if isinstance(data, dict) else data
    if not isinstance(steps, list) or not steps:
        return Parsed(plan, ["the reply has no list of steps"])
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
    if len(plan.nodes) == 1:
        # One step: the question itself is the best sub-query.
        plan.nodes = [Node(1, question, ())]
    return Parsed(plan, validate(plan, max_nodes))


def _repair(plan: Plan) -> None:
    """Deterministic fixes that make text references and dependency lists agree."""
    seen: dict[str, int] = {}
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
        key = node.question.lower()
        if key in seen and not deps:
            plan.repairs.append(f"step {node.id} repeats step {seen[key]}")
        seen.setdefault(key, node.id)


Generate = Callable[[list[dict], dict], tuple[str, int]]  # (messages, schema) -> (text, tokens)


def make_plan(question: str, generate: Generate, max_nodes: int = MAX_NODES) -> Plan:
    """Ask the planner, repair once if needed, else fall back to one node."""
    start = time.perf_counter()
    schema = plan_schema(max_nodes)
    messages = prompts.planner_messages(question)
    raw, tokens = generate(messages, schema)
    parsed = parse_plan(question, raw, max_nodes)
    if parsed.problems:
        retry = messages + [{"role": "assistant", "content": raw}, {"role": "user", "content": prompts.planner_repair(parsed.problems)}]
        raw2, tokens2 = generate(retry, schema)
        tokens += tokens2
        second = parse_plan(question, raw2, max_nodes)
        if second.problems:
            plan = single_node(question, f"the planner's plan was invalid twice ({'; '.join(second.problems)})")
            plan.raw = raw2
        else:
            plan = second.plan
            plan.repairs.insert(0, f"first plan was invalid ({'; '.join(parsed.problems)}); the planner repaired it")
    else:
        plan = parsed.plan
    plan.seconds = time.perf_counter() - start
    plan.tokens = tokens
    return plan


def single_node(question: str, reason: str | None = None) -> Plan:
    return Plan(question=question, nodes=[Node(1, question, ())], fallback=reason)
