"""Hand-checked scoring cases for complm_cli.evaluate.metrics."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from complm_cli.evaluate.metrics import (
    best_of,
    choice_letter,
    contains,
    exact_match,
    normalize,
    score,
    summarize,
    token_f1,
    yes_no,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The Eiffel Tower", "eiffel tower"),
        ("an apple a day", "apple day"),
        ("  Hello,   World!  ", "hello world"),
        ("Paris.", "paris"),
        ("don't", "dont"),
        ("Jean-Paul Sartre", "jean paul sartre"),
        ("1,000", "1000"),
        ("212.0", "212"),
        ("212°F", "212 f"),
        ("2.50", "2.5"),
        ("-40", "-40"),
        ("twenty-four", "24"),
        ("Eight legs", "8 legs"),
        ("Gödel", "godel"),
        ("list.append()", "list append"),
        ("3.10.4", "3 10 4"),
        ("", ""),
        ("The", ""),
    ],
)
def test_normalize(text: str, expected: str) -> None:
    assert normalize(text) == expected


@pytest.mark.parametrize(
    ("prediction", "gold", "expected"),
    [
        ("the Eiffel Tower", "Eiffel Tower", 1.0),
        ("Eiffel Tower!", "The eiffel tower.", 1.0),
        ("Eiffel", "Eiffel Tower", 0.0),
        ("1,000", "1000", 1.0),
        ("212.0", "212", 1.0),
        ("Shakespeare", ["William Shakespeare", "Shakespeare"], 1.0),
        ("Marlowe", ["William Shakespeare", "Shakespeare"], 0.0),
        ("", "Paris", 0.0),
    ],
)
def test_exact_match(prediction: str, gold: str | list[str], expected: float) -> None:
    assert exact_match(prediction, gold) == expected


@pytest.mark.parametrize(
    ("prediction", "gold", "expected"),
    [
        ("Eiffel Tower", "the Eiffel Tower", 1.0),
        # 1 common token of 2 predicted and 1 gold: p=1/2, r=1 -> 2/3
        ("Eiffel Tower", "Eiffel", 2 / 3),
        # 2 common of 3 and 4: p=2/3, r=1/2 -> 4/7
        ("William Shakespeare wrote", "playwright William Shakespeare himself", 4 / 7),
        ("cat", "dog", 0.0),
        ("", "dog", 0.0),
        ("", "", 1.0),
        ("Shakespeare", ["Marlowe", "William Shakespeare"], 2 / 3),
    ],
)
def test_token_f1(prediction: str, gold: str | list[str], expected: float) -> None:
    assert token_f1(prediction, gold) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("prediction", "gold", "expected"),
    [
        ("The river is the Seine.", "Seine", 1.0),
        ("Water boils at 212 degrees Fahrenheit.", "212", 1.0),
        ("Water boils at 212°F.", "212", 1.0),
        ("Water boils at 212.0 °F.", "212°F", 1.0),
        ("It boils at 212 degrees.", "212°F", 1.0),
        ("About 1,000 people came.", "1000", 1.0),
        ("About 1000 people came.", "1,000", 1.0),
        ("A spider has eight legs.", "8", 1.0),
        ("It took 24 years.", "twenty-four", 1.0),
        ("The answer is 2120.", "212", 0.0),  # whole words only
        ("It is 21.2", "212", 0.0),
        ("Seines", "Seine", 0.0),
        ("", "Seine", 0.0),
    ],
)
def test_contains(prediction: str, gold: str, expected: float) -> None:
    assert contains(prediction, gold) == expected


@pytest.mark.parametrize(
    ("prediction", "expected"),
    [
        ("No.", "no"),
        ("Yes, because the spider has 8 legs.", "yes"),
        ("**Yes**", "yes"),
        ("True", "yes"),
        ("false", "no"),
        ("The answer is: **No**", "no"),
        ("Mars is smaller, so the answer is no.", "no"),
        ("I know the answer", None),
        ("", None),
    ],
)
def test_yes_no(prediction: str, expected: str | None) -> None:
    assert yes_no(prediction) == expected


@pytest.mark.parametrize(
    ("prediction", "expected"),
    [
        ("B", "B"),
        ("(C)", "C"),
        ("c", "C"),
        ("The answer is D.", "D"),
        ("Answer: A) foo", "A"),
        ("answer is (b)", "B"),
        ("(E) Paris", "E"),
        ("J.", "J"),
        ("I think it is G", "G"),
        ("The correct option is H", "H"),
        ("A cat sat down", None),
        ("The answer is Dublin", None),
        ("", None),
    ],
)
def test_choice_letter(prediction: str, expected: str | None) -> None:
    assert choice_letter(prediction) == expected


def test_score_text() -> None:
    row = score("Water boils at 212 degrees Fahrenheit.", "212")
    assert row["kind"] == "text"
    assert row["em"] == 0.0
    assert row["contains"] == 1.0
    assert row["correct"] == 1.0
    # tokens: water boils at 212 degrees fahrenheit (6), 1 shared: p=1/6, r=1
    assert row["f1"] == pytest.approx(2 / 7)


def test_score_text_exact() -> None:
    assert score("The Seine", ["Seine", "River Seine"]) == {
        "em": 1.0, "f1": 1.0, "contains": 1.0, "kind": "text", "correct": 1.0
    }


def test_score_empty_prediction() -> None:
    assert score("", "Paris") == {"em": 0.0, "f1": 0.0, "contains": 0.0, "kind": "text", "correct": 0.0}
    assert score("", "yes")["correct"] == 0.0
    assert score("", "B")["correct"] == 0.0


def test_score_yes_no() -> None:
    row = score("No, Venus is larger than Mars.", "no")
    assert row["kind"] == "yesno"
    assert row["correct"] == 1.0
    assert score("Yes.", "No")["correct"] == 0.0
    assert score("True", ["yes"])["correct"] == 1.0


def test_score_choice() -> None:
    row = score("The answer is (C) because ...", "C")
    assert row["kind"] == "choice"
    assert row["correct"] == 1.0
    assert score("B", "(A)")["correct"] == 0.0
    assert score("D", ["C", "D"])["correct"] == 1.0


def test_score_mixed_golds_are_text() -> None:
    assert score("yes", ["yes", "indeed"])["kind"] == "text"


def test_score_needs_a_gold() -> None:
    with pytest.raises(ValueError):
        score("x", [])


def test_best_of() -> None:
    assert best_of(lambda p, g: float(len(g)), "x", ["a", "abc", "ab"]) == 3.0
    assert best_of(lambda p, g: float(len(g)), "x", "abcd") == 4.0


def test_summarize() -> None:
    rows = [score("Paris", "Paris"), score("Lyon", "Paris"), score("It is Paris.", "Paris")]
    summary = summarize(rows)
    assert summary["count"] == 3
    assert summary["em"] == pytest.approx(1 / 3)
    assert summary["contains"] == pytest.approx(2 / 3)
    assert summary["correct"] == pytest.approx(2 / 3)
    # f1: 1, 0, and p=1/3 r=1 -> 1/2 for "it is paris" ("it", "is" are not articles)
    assert summary["f1"] == pytest.approx((1 + 0 + 0.5) / 3)


def test_summarize_empty() -> None:
    assert summarize([]) == {"count": 0, "em": 0.0, "f1": 0.0, "contains": 0.0, "correct": 0.0}


@example("_0A")  # a number glued to a letter once became "0" on the second pass
@example(".0\x1b")  # ... and one glued to a control character split from it on the second pass
@given(st.text())
def test_normalize_is_idempotent(text: str) -> None:
    once = normalize(text)
    assert normalize(once) == once


@given(st.text(), st.text())
def test_scores_are_bounded(prediction: str, gold: str) -> None:
    row = score(prediction, gold)
    for key in ("em", "f1", "contains", "correct"):
        assert 0.0 <= row[key] <= 1.0
    assert row["correct"] >= row["em"] or row["kind"] != "text"


def test_contains_ignores_what_the_prediction_copies_from_the_question():
    question = "In Python, how many elements do the list [1, 2, 3] and the tuple (4, 5, 6, 7) have in total?"
    wrong = "In Python, the list [1, 2, 3] and the tuple (4, 5, 6, 7) have a total of 6 elements."
    assert score(wrong, "7")["correct"] == 1.0  # fooled without the question
    assert score(wrong, "7", question)["correct"] == 0.0
    assert score("There are 7 elements in all.", "7", question)["correct"] == 1.0
