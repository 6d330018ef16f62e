"""Which steps may run while the planner is still writing: StepRelease fed the reply as it grows."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from complm_cli.compose.dag import Node
from complm_cli.compose.plan import parse_plan, ungrounded
from complm_cli.compose.plan_stream import StepRelease, stable_steps

LEGS = "How many legs do three spiders and two dogs have in total?"
SPIDER = 'legs = ask("How many legs does a spider have?")'
DOG = 'dog = ask("How many legs does a dog have?")'
TOTAL = "total = 3 * legs + 2 * dog"


def grow(question: str, reply: str) -> list[tuple[int, list[Node]]]:
    """Feed `reply` one character at a time, as tokens come: (characters written, steps released then)."""
    release = StepRelease(question)
    out = []
    for end in range(1, len(reply) + 1):
        new = release.feed(reply[:end])
        if new:
            out.append((end, new))
    return out


def test_steps_come_out_when_their_line_is_complete():
    reply = f"{SPIDER}\n{DOG}\n{TOTAL}\n\n"
    released = grow(LEGS, reply)
    assert released == [
        (len(f"{SPIDER}\n"), [Node(1, "How many legs does a spider have?")]),
        (len(f"{SPIDER}\n{DOG}\n"), [Node(2, "How many legs does a dog have?")]),
        (len(reply) - 1, [Node(3, "3 * {1} + 2 * {2}", (1, 2))]),
    ]
    assert [n for _, new in released for n in new] == parse_plan(LEGS, reply).plan.nodes


def test_a_first_step_is_released_before_it_is_known_whether_a_second_follows():
    # Speculative: a lone step becomes the whole question, so this step as written is discarded
    # by the caller (overlap.settle) when no second step comes, and the question runs instead.
    question = "What is the capital of Japan, the country?"
    reply = 'capital = ask("What is the capital of Japan?")\n\nThat is the plan.\n'
    assert grow(question, reply) == [(len(reply.split("\n")[0]) + 1, [Node(1, "What is the capital of Japan?")])]
    assert parse_plan(question, reply).plan.nodes == [Node(1, question)]


def test_a_repeated_step_is_not_released():
    question = "How many people live in the capital of France, and what is its area?"
    france = 'a = ask("What is the capital of France?")\n'
    # the repeat releases nothing more: still one step
    assert grow(question, france + france.replace("a =", "b =")) == [(len(france), [Node(1, "What is the capital of France?")])]
    released = grow(question, france + france.replace("a =", "b =") + 'c = ask("How many people live in {b}?")\n'
                    + 'd = ask("What is the area of {a}?")\n')
    steps = [n for _, new in released for n in new]
    assert steps == [Node(1, "What is the capital of France?"), Node(2, "How many people live in {1}?", (1,)),
                     Node(3, "What is the area of {1}?", (1,))]


def test_an_ungrounded_step_stops_the_release():
    # A step taken from the planner's examples sends the plan to the fallback: nothing after it may run.
    question = "How many legs does a spider have, and how many does a dog have?"
    reply = f"{SPIDER}\n" + 'ocean = ask("What is the largest ocean on Earth?")\n' + f"{DOG}\n{TOTAL}\n"
    release = StepRelease(question)
    for end in range(1, len(reply) + 1):
        release.feed(reply[:end])
    assert release.released == [Node(1, "How many legs does a spider have?")]  # before the bad line only
    assert release.stopped == "step 2 is not about the question"
    assert ungrounded(parse_plan(question, reply).plan, question) == [2]


def test_a_reference_to_a_step_not_written_yet_waits_and_stops():
    question = "In which country was the author of Don Quixote born?"
    reply = 'country = ask("In which country was {author} born?")\nauthor = ask("Who wrote Don Quixote?")\n'
    release = StepRelease(question)
    assert [release.feed(reply[:end]) for end in range(1, len(reply) + 1)] == [[]] * len(reply)
    assert "which no earlier line sets" in release.stopped


def test_a_chain_is_released_with_its_references_and_the_anaphora_rule():
    question = "In which country was the painter of the Mona Lisa born?"
    reply = 'painter = ask("Who painted the Mona Lisa?")\ncountry = ask("In which country was that painter born?")\n'
    steps = [n for _, new in grow(question, reply) for n in new]
    assert steps == parse_plan(question, reply).plan.nodes
    assert steps[1].depends_on == (1,) and "{1}" in steps[1].question


def test_a_json_reply_releases_nothing_early_and_still_parses_at_the_end():
    question = "Who painted the Mona Lisa, and what is the largest ocean on Earth?"
    reply = json.dumps({"steps": [{"q": "Who painted the Mona Lisa?", "deps": []},
                                  {"q": "What is the largest ocean on Earth?", "deps": []}]}, indent=1) + "\n"
    release = StepRelease(question)
    assert all(release.feed(reply[:end]) == [] for end in range(1, len(reply) + 1))
    assert release.stopped and "JSON" in release.stopped
    assert [n.question for n in parse_plan(question, reply).plan.nodes] == ["Who painted the Mona Lisa?",
                                                                             "What is the largest ocean on Earth?"]


def test_prose_before_the_plan_stops_the_release_and_nothing_yet_does_not():
    assert stable_steps(LEGS, "") == ([], None)
    assert stable_steps(LEGS, "```python\n") == ([], None)
    nodes, why = stable_steps(LEGS, "Here is the plan:\n" + f"{SPIDER}\n{DOG}\n")
    assert nodes == [] and "neither" in why


def test_a_plan_over_the_step_cap_stops_the_release():
    question = "How many legs do a spider, a dog, a cat and a bird have?"
    lines = [f'a{i} = ask("How many legs does a {animal} have?")' for i, animal in enumerate(["spider", "dog", "cat", "bird"])]
    nodes, why = stable_steps(question, "\n".join(lines) + "\n", max_nodes=3)
    assert nodes == [] and "more than the cap" in why


# --- property: a released step is the step the whole plan has at that place -----------------

LINES = [
    SPIDER, DOG, TOTAL, 'legs2 = ask("How many legs does a spider have?")', "twice = 2 * legs",
    'cat = ask("How many legs does a cat have?")', 'ocean = ask("What is the largest ocean on Earth?")',
    'odd = ask("Why does a {nothing} have legs?")', 'who = ask("Which animal has {legs} legs?")',
    'it = ask("How many legs does it have?")', "spiders = 3", "x = spiders * legs", "", "```", "Done.",
]


@given(st.lists(st.sampled_from(LINES), min_size=1, max_size=8), st.booleans())
def test_released_steps_are_the_first_steps_of_the_whole_plan(lines, newline):
    question = LEGS
    reply = "\n".join(lines) + ("\n" if newline else "")
    release = StepRelease(question)
    for end in range(1, len(reply) + 1):
        release.feed(reply[:end])
    final = parse_plan(question, reply)
    clean = not final.problems and not ungrounded(final.plan, question)
    if clean and len(final.plan.nodes) > 1:
        assert release.released == final.plan.nodes[: len(release.released)]
    elif clean:  # one step: the question itself runs; at most the step as written was started, speculatively
        assert final.plan.nodes == [Node(1, question)] or len(release.released) <= 1
