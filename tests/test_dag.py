"""Plans as graphs: levels, width, descendants, validation, and answer substitution."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from complm_cli.compose.dag import Node, Plan, references, short_answer, substitute, validate


def make(*deps: tuple[int, ...]) -> Plan:
    """A plan whose node i+1 depends on deps[i]; each question names its deps as {k}."""
    nodes = []
    for i, d in enumerate(deps, 1):
        refs = " ".join("{%d}" % k for k in d)
        nodes.append(Node(i, f"Question {i}? {refs}".strip(), tuple(d)))
    return Plan(question="Q?", nodes=nodes)


FAN_OUT = make((), (), ())
CHAIN = make((), (1,), (2,))
DIAMOND = make((), (1,), (1,), (2, 3))
JOIN = make((), (), (1, 2))  # two look-ups, then a step that uses both


@pytest.mark.parametrize(
    ("plan", "levels", "width"),
    [
        (FAN_OUT, [[1, 2, 3]], 3),
        (CHAIN, [[1], [2], [3]], 1),
        (DIAMOND, [[1], [2, 3], [4]], 2),
        (JOIN, [[1, 2], [3]], 2),
        (make(()), [[1]], 1),
        (make((), (), (1,), (3,)), [[1, 2], [3], [4]], 2),  # an independent node sits at level 0
        (Plan(question="Q?", nodes=[]), [], 0),
    ],
    ids=["fan-out", "chain", "diamond", "join", "single", "uneven", "empty"],
)
def test_levels_and_width(plan: Plan, levels: list[list[int]], width: int) -> None:
    assert plan.levels() == levels
    assert plan.width == width


def test_level_is_longest_path_not_first_parent() -> None:
    # Node 4 depends on 1 (level 0) and 3 (level 2): it belongs on level 3.
    plan = make((), (1,), (2,), (1, 3))
    assert plan.levels() == [[1], [2], [3], [4]]


@pytest.mark.parametrize(
    ("plan", "node", "expected"),
    [
        (DIAMOND, 1, {2, 3, 4}),
        (DIAMOND, 2, {4}),
        (DIAMOND, 4, set()),
        (CHAIN, 1, {2, 3}),
        (CHAIN, 2, {3}),
        (FAN_OUT, 1, set()),
        (JOIN, 2, {3}),
    ],
)
def test_descendants(plan: Plan, node: int, expected: set[int]) -> None:
    assert plan.descendants(node) == expected


def test_node_lookup_and_to_dict() -> None:
    assert DIAMOND.node(4).depends_on == (2, 3)
    d = CHAIN.to_dict()
    assert d["nodes"][2] == {"id": 3, "question": "Question 3? {2}", "depends_on": [2]}
    assert d["fallback"] is None and d["repairs"] == []


@pytest.mark.parametrize("plan", [FAN_OUT, CHAIN, DIAMOND, JOIN])
def test_valid_plans_have_no_problems(plan: Plan) -> None:
    assert validate(plan, 4) == []


@pytest.mark.parametrize(
    ("nodes", "max_nodes", "fragment"),
    [
        ([], 4, "no steps"),
        ([Node(1, "A?"), Node(2, "B?"), Node(3, "C?")], 2, "more than the cap of 2"),
        ([Node(1, "A?"), Node(1, "B?")], 4, "not unique"),
        ([Node(1, "  ")], 4, "step 1 is empty"),
        ([Node(1, "A {2}?", (2,)), Node(2, "B?")], 4, "does not come before it"),
        ([Node(1, "A?"), Node(2, "B {7}?", (7,))], 4, "unknown step 7"),
        ([Node(1, "A?"), Node(2, "B?", (1,))], 4, "refers to [] in its text but lists [1]"),
        ([Node(1, "A?"), Node(2, "B {1}?")], 4, "refers to [1] in its text but lists []"),
    ],
)
def test_validate_problems(nodes: list[Node], max_nodes: int, fragment: str) -> None:
    problems = validate(Plan("Q?", nodes), max_nodes)
    assert any(fragment in p for p in problems), problems


def test_references_reads_both_spellings() -> None:
    assert references("After {1} and #2, but not #3x or {x}") == {1, 2}
    assert references("no references") == set()


# --- short answers and substitution -------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("The answer is Paris.", "Paris"),
        ("the ANSWER is   Leonardo da Vinci", "Leonardo da Vinci"),
        ("Answer: 42", "42"),
        ("  Paris \n", "Paris"),
        ("Rome...", "Rome"),
        ("", "(no answer)"),
        ("The answer is", "(no answer)"),
        ("It is the answer is", "It is the answer is"),  # only a leading phrase is stripped
    ],
)
def test_short_answer(answer: str, expected: str) -> None:
    assert short_answer(answer) == expected


def test_short_answer_truncates_at_a_word_with_an_ellipsis() -> None:
    out = short_answer("word " * 50, limit=20)
    assert out == "word word word word…"
    assert short_answer("x" * 50, limit=20) == "x" * 20 + "…"
    assert short_answer("short", limit=20) == "short"


@settings(database=None)
@given(st.text(), st.integers(min_value=1, max_value=300))
def test_short_answer_is_bounded(answer: str, limit: int) -> None:
    out = short_answer(answer, limit)
    assert out == "(no answer)" or len(out) <= limit + 1  # the ellipsis is the one extra character
    assert not any(c in out for c in "\n\t\r")


@pytest.mark.parametrize(
    ("question", "answers", "expected"),
    [
        ("In which country was {1} born?", {1: "The answer is Leonardo da Vinci."}, "In which country was Leonardo da Vinci born?"),
        ("In what year after {1} did {2} host it?", {1: "1989", 2: "Germany."}, "In what year after 1989 did Germany host it?"),
        ("Where is #1?", {1: "Paris"}, "Where is Paris?"),
        ("What about {3}?", {1: "Paris"}, "What about {3}?"),  # unknown references stay as they are
        ("No references.", {1: "Paris"}, "No references."),
        ("What is {1}?", {1: ""}, "What is (no answer)?"),
    ],
)
def test_substitute(question: str, answers: dict[int, str], expected: str) -> None:
    assert substitute(question, answers) == expected


def test_substitute_bounds_a_long_answer() -> None:
    long = "Leonardo " * 100
    out = substitute("Where was {1} born?", {1: long}, limit=30)
    assert out.startswith("Where was Leonardo Leonardo") and out.endswith("… born?")
    inserted = out[len("Where was ") : -len(" born?")]
    assert len(inserted) <= 31
