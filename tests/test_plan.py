"""The planner's output is untrusted: parse_plan and make_plan on any reply."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from complm_cli.compose import prompts
from complm_cli.compose.dag import Node, Plan, references, validate
from complm_cli.compose.plan import MAX_NODES, MAX_QUESTION_CHARS, make_plan, parse_plan, single_node

QUESTION = "Who painted the Mona Lisa, and in which country was that painter born?"


def reply(*steps: tuple[str, list]) -> str:
    """A plan as the planner writes it: one `name = ask("...")` line per step (its dependencies are in its words)."""
    return "\n".join(f's{i} = ask("{q}")' for i, (q, _) in enumerate(steps, 1))


def json_reply(*steps: tuple[str, list]) -> str:
    """The JSON form, with dependencies listed apart from the words: what a plan becomes when the planner
    only copies the question (planner.py), and what the parser still reads from a model that writes it."""
    return json.dumps({"steps": [{"q": q, "deps": deps} for q, deps in steps]})


def assert_valid(plan: Plan, max_nodes: int = MAX_NODES) -> None:
    """The DAG rules, checked here independently of dag.validate (and with it)."""
    assert validate(plan, max_nodes) == []
    assert 1 <= len(plan.nodes) <= max_nodes
    assert [n.id for n in plan.nodes] == list(range(1, len(plan.nodes) + 1))
    for n in plan.nodes:
        assert n.question.strip()
        assert all(1 <= d < n.id for d in n.depends_on)
        assert list(n.depends_on) == sorted(set(n.depends_on))
        if len(plan.nodes) > 1:  # a lone node has nothing to refer to: its text may say "#1" for other reasons
            assert references(n.question) == set(n.depends_on)
    assert len(plan.levels()) >= 1


# --- hypothesis: any reply ---------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=20,
)
step_texts = st.one_of(
    st.text(max_size=250),
    st.sampled_from(["Who wrote {1}?", "Where is #2?", "In which country was that painter born?", "What is {3}?",
                     "Compare {1} and {2}", "", "   ", "What is the capital of Japan?", "{0}", "#1", "x" * 300]),
    st.lists(st.sampled_from(["Who", "is", "{1}", "{2}", "#1", "#3", "that", "painter", "he", "it was", "?", " "]),
             max_size=12).map(" ".join),
)
garbage_deps = st.one_of(
    st.integers(-3, 8), st.sampled_from(["1", "#2", "{3}", " 2 ", "x", "", "1.5"]), st.floats(allow_nan=True),
    st.booleans(), st.none(), st.just([1]), st.just({"id": 1}),
)
step_dicts = st.fixed_dictionaries(
    {"q": step_texts},
    optional={"deps": st.one_of(st.lists(garbage_deps, max_size=4), garbage_deps)},
)
plan_shaped = st.fixed_dictionaries(
    {"steps": st.lists(st.one_of(step_dicts, step_texts, json_values), min_size=0, max_size=MAX_NODES + 2)}
)
# Near-misses a small planner really writes: sensible questions, small (maybe wrong) deps.
plausible_step = st.builds(
    lambda q, deps: {"q": q, "deps": deps},
    st.sampled_from(["Who wrote Don Quixote?", "In which country was {1} born?", "In which country was that painter born?",
                     "What year was #1 built?", "In what year after {1} did {2} host it?", "What is 17 times 3?",
                     "Where is {2} located?", "What is the population of {3}?", "What did he write?"]),
    st.lists(st.integers(0, MAX_NODES + 1), max_size=3),
)
plausible_plans = st.lists(plausible_step, min_size=1, max_size=MAX_NODES + 1).map(lambda s: json.dumps({"steps": s}))
# The form the planner writes: ask lines, formulas over earlier names, constants, and what a model adds around them.
line_rhs = st.one_of(
    st.sampled_from(['ask("Who wrote Don Quixote?")', 'ask("In which country was {a} born?")', 'ask("What is {b}?")',
                     'ask("How many legs does a spider have?")', "a + b", "3 * a", "max(a, b)", "48", '"2024-01-15"',
                     "days(a, b)", "a > b", "c", "round(b / 3, 2)", "unknown_name * 2", 'ask("")', "((("]),
    st.text(max_size=40),
)
line_plans = st.lists(st.tuples(st.sampled_from(["a", "b", "c", "d", "total", "x1"]), line_rhs), max_size=MAX_NODES + 2).map(
    lambda lines: "\n".join(f"{name} = {rhs}" for name, rhs in lines))
replies = st.one_of(
    line_plans,
    line_plans.map(lambda text: "```python\n" + text + "\n```\nThis plan asks each fact once."),
    plausible_plans,
    plan_shaped.map(json.dumps),
    json_values.map(json.dumps),
    st.text(max_size=300),
    plan_shaped.map(lambda d: "Here is the plan:\n```json\n" + json.dumps(d) + "\n```"),
    st.lists(step_dicts, max_size=5).map(json.dumps),  # a bare list of steps
)
questions = st.text(min_size=1, max_size=80).filter(str.strip)

FAST = settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@example("0", '{"steps": [{"q": "What is 17 times 3?", "deps": []}]}')  # a lone formula step is kept
@given(questions, replies)
def test_parse_plan_never_raises_and_is_valid_or_says_why(question: str, raw: str) -> None:
    parsed = parse_plan(question, raw)
    assert isinstance(parsed.problems, list)
    assert all(isinstance(p, str) and p for p in parsed.problems)
    if not parsed.problems:
        assert_valid(parsed.plan)
        if len(parsed.plan.nodes) == 1:
            # one step is the question itself, unless it is the calculation the question asks for
            from complm_cli.experts.calculator import to_formula

            only = parsed.plan.nodes[0]
            assert only == Node(1, question, ()) or (to_formula(only.question) and only.depends_on == ())
    assert parsed.plan.question == question


@FAST
@given(questions, st.integers(1, MAX_NODES), plan_shaped.map(json.dumps))
def test_parse_plan_respects_max_nodes(question: str, max_nodes: int, raw: str) -> None:
    parsed = parse_plan(question, raw, max_nodes)
    if not parsed.problems:
        assert_valid(parsed.plan, max_nodes)


@pytest.mark.parametrize("raw", [None, 42, b'{"steps": []}', ["a"]])
def test_parse_plan_accepts_non_text(raw) -> None:
    parsed = parse_plan("Q?", raw)
    assert parsed.problems


def test_parse_plan_survives_deep_nesting() -> None:
    assert parse_plan("Q?", "[" * 5000 + "]" * 5000).problems


@FAST
@given(questions, replies)
def test_make_plan_is_valid_or_an_explained_fallback(question: str, first: str) -> None:
    calls: list[list[dict]] = []

    def generate(messages: list[dict]) -> tuple[str, int]:
        calls.append(messages)
        return first, 7

    plan = make_plan(question, generate)
    assert len(calls) == 1 and plan.tokens == 7  # no repair round: one call, whatever the reply
    if plan.fallback is None:
        assert_valid(plan)
    else:
        assert plan.fallback.strip()
        assert plan.nodes == [Node(1, question, ())]
        assert plan.raw == first


# --- hand cases ----------------------------------------------------------------------


def test_fan_out() -> None:
    parsed = parse_plan("Who painted the Mona Lisa, and what is the largest ocean?",
                        reply(("Who painted the Mona Lisa?", []), ("What is the largest ocean on Earth?", [])))
    assert parsed.problems == []
    assert parsed.plan.nodes == [Node(1, "Who painted the Mona Lisa?", ()), Node(2, "What is the largest ocean on Earth?", ())]
    assert parsed.plan.levels() == [[1, 2]]
    assert parsed.plan.repairs == []


def test_chain() -> None:
    parsed = parse_plan("In which country was the author of Don Quixote born?",
                        reply(("Who wrote Don Quixote?", []), ("In which country was {1} born?", [1])))
    assert parsed.problems == []
    assert parsed.plan.nodes[1] == Node(2, "In which country was {1} born?", (1,))
    assert parsed.plan.repairs == []


def test_hash_reference_is_normalised() -> None:
    parsed = parse_plan(QUESTION, reply(("Who painted the Mona Lisa?", []), ("Where was #1 born?", [1])))
    assert parsed.problems == []
    assert parsed.plan.nodes[1].question == "Where was {1} born?"


def test_reference_in_text_adds_the_dependency() -> None:
    parsed = parse_plan(QUESTION, json_reply(("Who painted the Mona Lisa?", []), ("Where was {1} born?", [])))
    assert parsed.problems == []
    assert parsed.plan.nodes[1].depends_on == (1,)
    assert any("added dependencies [1]" in r for r in parsed.plan.repairs)


def test_listed_dependency_missing_from_text_is_appended() -> None:
    parsed = parse_plan(QUESTION, json_reply(("Who painted the Mona Lisa?", []), ("Where was the painter born?", [1])))
    assert parsed.problems == []
    assert parsed.plan.nodes[1] == Node(2, "Where was the painter born? (given {1})", (1,))


def test_anaphora_gets_a_dependency_on_the_previous_step() -> None:
    parsed = parse_plan(QUESTION, reply(("Who painted the Mona Lisa?", []), ("In which country was that painter born?", [])))
    assert parsed.problems == []
    assert parsed.plan.nodes[1] == Node(2, "In which country was that painter born? (given {1})", (1,))
    assert any("refers back" in r for r in parsed.plan.repairs)


def test_independent_step_gets_no_anaphora_dependency() -> None:
    parsed = parse_plan("Q?", reply(("Who painted the Mona Lisa?", []), ("What is the capital of Japan?", [])))
    assert [n.depends_on for n in parsed.plan.nodes] == [(), ()]


def test_forward_reference_is_a_problem() -> None:
    parsed = parse_plan("Q?", reply(("Who painted the Mona Lisa?", []), ("Where was {3} born?", []), ("What is 2+2?", [])))
    assert any("step 2 depends on step 3" in p for p in parsed.problems)


def test_forward_dependency_without_a_reference_is_dropped() -> None:
    parsed = parse_plan("Q?", json_reply(("A painter?", []), ("An ocean?", [2, 3, 0])))
    assert parsed.problems == []
    assert parsed.plan.nodes[1].depends_on == ()
    assert any("dropped dependencies" in r for r in parsed.plan.repairs)


def test_string_and_float_deps_are_read() -> None:
    parsed = parse_plan("Q?", json.dumps({"steps": [{"q": "A?"}, {"q": "B {1}?", "deps": ["#1"]}, {"q": "C?", "deps": 2.0}]}))
    assert parsed.problems == []
    assert [n.depends_on for n in parsed.plan.nodes] == [(), (1,), (2,)]


def test_one_step_plan_keeps_the_original_question() -> None:
    question = "  What is the capital of   Japan?  "
    parsed = parse_plan(question, reply(("capital japan", [])))
    assert parsed.problems == []
    assert parsed.plan.nodes == [Node(1, question, ())]


def test_too_many_steps_is_a_problem() -> None:
    raw = reply(*[(f"Question {i}?", []) for i in range(MAX_NODES + 1)])
    parsed = parse_plan("Q?", raw)
    assert any(f"more than the cap of {MAX_NODES}" in p for p in parsed.problems)
    assert parse_plan("Q?", raw, max_nodes=MAX_NODES + 1).problems == []


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ("I cannot help with that.", "not JSON"),
        ('{"steps": []}', "no list of steps"),
        ('{"plan": [{"q": "A?"}]}', "no list of steps"),
        ('{"steps": [{"q": "A?"}, 7]}', "step 2 is not an object"),
        ('{"steps": [{"q": "A?"}, {"q": ""}]}', "step 2 is empty"),
    ],
)
def test_problems(raw: str, fragment: str) -> None:
    assert any(fragment in p for p in parse_plan("Q?", raw).problems)


def test_json_wrapped_in_prose_is_read() -> None:
    raw = "Sure! ```json\n" + json_reply(("A?", []), ("B?", [])) + "\n``` Hope that helps."
    assert parse_plan("Q?", raw).problems == []


def test_long_step_is_cut() -> None:
    parsed = parse_plan("Q?", reply(("word " * 100, []), ("B?", [])))
    assert parsed.problems == []
    assert len(parsed.plan.nodes[0].question) <= MAX_QUESTION_CHARS
    assert any("was cut" in r for r in parsed.plan.repairs)


class Planner:
    """A fake planner: hands out scripted replies and records what it was sent."""

    def __init__(self, *replies: str):
        self.replies = list(replies)
        self.calls: list[list[dict]] = []

    def __call__(self, messages: list[dict]) -> tuple[str, int]:
        self.calls.append(messages)
        return self.replies[len(self.calls) - 1], 10


def test_make_plan_uses_a_good_first_plan() -> None:
    planner = Planner(reply(("Who painted the Mona Lisa?", []), ("In which country was {1} born?", [1])))
    plan = make_plan(QUESTION, planner)
    assert len(planner.calls) == 1
    assert planner.calls[0] == prompts.planner_messages(QUESTION)
    assert plan.fallback is None and plan.tokens == 10 and plan.repairs == []
    assert len(plan.nodes) == 2


def test_make_plan_falls_back_to_one_node_with_a_reason() -> None:
    planner = Planner('{"steps": "still no"}', reply(("Who painted the Mona Lisa?", [])))
    plan = make_plan(QUESTION, planner)
    assert len(planner.calls) == 1  # no repair round (see plan.py)
    assert plan.nodes == [Node(1, QUESTION, ())]
    assert plan.fallback and "invalid" in plan.fallback and "no list of steps" in plan.fallback
    assert plan.raw == '{"steps": "still no"}'
    assert plan.tokens == 10


def test_single_node() -> None:
    assert single_node("Q?").fallback is None
    assert single_node("Q?", "why").to_dict()["fallback"] == "why"


def test_one_step_plan_with_a_hash_number_in_the_question() -> None:
    question = "What did GitHub issue #1 of CPython ask for?"
    assert parse_plan(question, reply((question, []))).problems == []


@pytest.mark.parametrize(
    ("partial", "expected"),
    [
        ('{"steps": [{"q": "What is the capital of Japan?"', True),
        ('{"steps": [{"q": "What is the capital of Japan?", "deps": []}]}', True),
        ('{ "steps" : [ { "q" : "What  is the capital of Japan?"', True),  # whitespace differs only
        ('{"steps": [{"q": "What is the capital', False),  # not closed yet
        ('{"steps": [{"q": "What is the capital of Japan"', False),  # a different question
        ('{"steps": [{"q": "Who wrote it?"', False),
        ("not json", False),
    ],
)
def test_copies_question(partial: str, expected: bool) -> None:
    from complm_cli.compose.plan import copies_question

    assert copies_question(partial, "What is the capital of Japan?") is expected


def test_copies_question_reads_escapes() -> None:
    from complm_cli.compose.plan import copies_question

    assert copies_question('{"steps": [{"q": "Who wrote \\"1984\\"?"', 'Who wrote "1984"?')


@pytest.mark.parametrize("raw, steps", [
    # The plan the issue saw: the two dates as steps of their own, then a `.days` the calculator did not know.
    ('start = "2024-01-15"\nend = "2024-03-01"\ndays = (end - start).days', ["('2024-03-01' - '2024-01-15')"]),
    ('start = "January 15, 2024"\nend = "2024-03-01"\nn = days(start, end)', ["days('January 15, 2024', '2024-03-01')"]),
    # A date in an ask's words is the date; in a formula it is a quoted value whose month is no unknown name.
    ("d = '2024-01-15'\nx = ask(\"What happened on {d}?\")\nw = weekday(d)", ["What happened on 2024-01-15?", "weekday('2024-01-15')"]),
    ('born = ask("On what date was Mozart born?")\nage = years(born, "December 5, 1791")',
     ["On what date was Mozart born?", 'years({1}, "December 5, 1791")']),
])
def test_dates_in_a_plan_are_values_not_steps(raw: str, steps: list[str]) -> None:
    parsed = parse_plan("Q?", raw)
    assert parsed.problems == [] and [n.question for n in parsed.plan.nodes] == steps


@pytest.mark.parametrize("raw, steps", [
    # Sampled plans of GSM8K tuning problems: a name of words with spaces, set and then used spaced or joined.
    ("clips April = 48\nclips may = clips April / 2\ntotal = clips April + clips may", ["48 / 2", "48 + {1}"]),
    ("polo shirts = 3 * 26\nnecklaces = 2 * 83\ntotal = polo_shirts + necklaces", ["3 * 26", "2 * 83", "{1} + {2}"]),
    # in an ask's words only a reference in braces is the name: "polo shirts" in prose stays as written
    ('polo shirts = 3 * 26\nq = ask("Who sells {polo shirts} polo shirts?")', ["3 * 26", "Who sells {1} polo shirts?"]),
    # `name += x` is a new step that later lines mean by the name, also when the name held a number.
    ("clips = 48\nclips += clips / 2", ["48 + (48 / 2)"]),
    ("shells = 180\nshells -= 40\nleft = shells / 2", ["180 - (40)", "{1} / 2"]),
    ("a = ask(\"How many legs does a spider have?\")\na *= 3\nb = a + 1", ["How many legs does a spider have?", "{1} * (3)",
                                                                        "{2} + 1"]),
])
def test_names_with_spaces_and_updates_in_place_are_read(raw: str, steps: list[str]) -> None:
    parsed = parse_plan("Q?", raw)
    assert parsed.problems == [] and [n.question for n in parsed.plan.nodes] == steps
    assert parsed.plan.repairs  # what was read differently is said


@pytest.mark.parametrize("raw", ["let x = 5\ny = x * 2", "so total = 5\ny = total * 2",
                                 # an entity ask() sets under a name of words: such plans asked the wrong thing
                                 'bin Laden = ask("Who is Osama bin Laden?")\nw = ask("Does {bin Laden} fast?")'])
def test_prose_or_an_entity_before_an_equals_sign_is_no_name(raw: str) -> None:
    assert parse_plan("Q?", raw).problems


def test_prose_after_the_plan_adds_no_step() -> None:
    parsed = parse_plan("Q?", "a = 5 * 3\nb = a + 1\nThis means b = 16 + 1")
    assert parsed.problems == [] and [n.question for n in parsed.plan.nodes] == ["5 * 3", "{1} + 1"]
