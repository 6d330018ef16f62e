"""The calculator expert: formulas from plan steps, exact values, and refusals."""

from fractions import Fraction

import pytest

from complm_cli.experts.calculator import CalculationError, calculate, evaluate, to_formula
from complm_cli.numbers import extract_number, find_numbers, format_number


@pytest.mark.parametrize("step, formula", [
    ("{1} + {2}", "{1} + {2}"),
    ("What is 17 * 23?", "17 * 23"),
    ("Calculate 48 / 2.", "48 / 2"),
    ("3 * {1} + 2 * {2}", "3 * {1} + 2 * {2}"),
    ("the sum of {1} and {2}", "{1} + {2}"),
    ("The sum of {1}, {2} and {3}", "{1} + {2} + {3}"),
    ("What is the product of {1} and {2}?", "{1} * {2}"),
    ("{1} minus {2}", "{1} - {2}"),
    ("What is the difference between {1} and {2}?", "abs({1} - {2})"),
    ("How many years passed between {1} and {2}?", "abs({2} - {1})"),
    ("How many days are there between 2024-01-01 and 2024-03-01?", "days('2024-01-01', '2024-03-01')"),
    ("15% of {1}", "15 / 100 * {1}"),
    ("average of {1}, {2} and {3}", "({1} + {2} + {3}) / 3"),
    ("{1} divided by {2}", "{1} / {2}"),
    ("round({1} * 1.15, 2)", "round({1} * 1.15, 2)"),
    ("2^10", "2^10"),
    ("3 x 4", "3 x 4"),
])
def test_calculation_steps_become_formulas(step, formula):
    assert to_formula(step) == formula


@pytest.mark.parametrize("step", [
    "What is the capital of France?",
    "Who was president of the United States in 1990?",
    "In what year after {1} did {2} host the World Cup?",
    "1990",
    "__import__('os').system('ls')",
    "How many legs does a spider have?",
    "",
    "4 * weeks",
])
def test_other_steps_are_not_calculations(step):
    assert to_formula(step) is None


@pytest.mark.parametrize("formula, value", [
    ("0.1 + 0.2", Fraction(3, 10)),
    ("2 ** 10", Fraction(1024)),
    ("7 // 2", Fraction(3)),
    ("7 % 4", Fraction(3)),
    ("-(3 - 5)", Fraction(2)),
    ("sqrt(16)", Fraction(4)),
    ("round(2 / 3, 2)", Fraction(67, 100)),
    ("max(3, 9, 4) - min(3, 9, 4)", Fraction(6)),
    ("1,000 + 1", Fraction(1001)),
    ("25% * 80", Fraction(20)),
    ("3 x 4", Fraction(12)),
    ("2^3", Fraction(8)),
])
def test_exact_values(formula, value):
    assert evaluate(formula) == value


@pytest.mark.parametrize("formula, reason", [
    ("__import__('os')", "allowed"),
    ("(lambda: 1)()", "allowed"),
    ("open('x').read()", "allowed"),
    ("[1, 2][0]", "arithmetic"),
    ("2 ** 100000", "too large"),
    ("9 ** 9 ** 9", "too large"),
    ("10 ** 101", "too large"),
    ("1 / 0", "division by zero"),
    ("5 % 0", "division by zero"),
    ("0 ** -1", "division by zero"),
    ("sqrt(-4)", "negative"),
    ("'abc'", "not a number"),
    ("x + 1", "not a number"),
    ("1 +", "not a formula"),
    ("1" * 400, "too long"),
    ("+".join(["1"] * 200), "too long"),
    ("round(1.5, 99)", "decimal places"),
    ("4 * weeks", "is a function, not a number"),  # once read as the answer of a step named "s"
    ("sqrt + 1", "is a function, not a number"),
])
def test_refusals(formula, reason):
    with pytest.raises(CalculationError) as err:
        evaluate(formula)
    assert reason in err.value.message


def test_calculate_reads_numbers_from_parent_sentences():
    calc = calculate("3 * {1} + 2 * {2}", {1: ("How many legs does a spider have?", "A spider has eight legs."),
                                           2: ("How many legs does a dog have?", "Dogs have 4 legs.")})
    assert (calc.expression, calc.result, calc.answer) == ("3 * 8 + 2 * 4", "32", "3 * 8 + 2 * 4 = 32")


def test_calculate_year_and_date_differences():
    years = calculate("{2} - {1}", {1: ("In what year was the first Moon landing?", "The first Moon landing was in 1969."),
                                    2: ("In what year did the Berlin Wall fall?", "It fell on November 9, 1989.")})
    assert years.result == "20"
    days = calculate("How many days between {1} and {2}?", {1: ("a", "It began on July 20, 1969."), 2: ("b", "On 2024-01-01")})
    assert days.result == f'{(__import__("datetime").date(2024, 1, 1) - __import__("datetime").date(1969, 7, 20)).days} days'


def test_calculate_fails_with_a_reason_when_a_number_is_missing():
    with pytest.raises(CalculationError, match="no number"):
        calculate("{1} + 2", {1: ("Who wrote Hamlet?", "William Shakespeare.")})
    with pytest.raises(CalculationError, match="missing"):
        calculate("{1} + {2}", {1: ("a", "3")})
    with pytest.raises(CalculationError, match="division by zero"):
        calculate("{1} / {2}", {1: ("a", "3"), 2: ("b", "zero")})


@pytest.mark.parametrize("answer, question, value", [
    ("A spider has eight legs.", "How many legs does a spider have?", 8),
    ("There are 1,234 people.", "", 1234),
    ("About 1.4 million people live there.", "", 1400000),
    ("one hundred and twenty-three", "", 123),
    ("It costs $12.50.", "", Fraction(25, 2)),
    ("In 2010 the town had 5,000 residents.", "What was the population of the town in 2010?", 5000),
    ("A dozen eggs.", "", 12),
    ("The temperature was -5 degrees.", "", -5),
    ("It fell on November 9, 1989.", "In what year did the Berlin Wall fall?", 1989),
    ("World War I ended on November 11, 1918.", "When did World War I end?", 1918),
    ("8 + 4 = 12", "", 12),
    ("No number here.", "", None),
])
def test_extract_number(answer, question, value):
    assert extract_number(answer, question) == value


def test_find_numbers_in_reading_order():
    found = [v for _, v, _ in find_numbers("twenty-one cats, 3 dogs and 25% of 8")]
    assert found == [21, 3, 25, 8]


@pytest.mark.parametrize("value, text", [(Fraction(12), "12"), (Fraction(1, 3), "0.333333"), (2.5, "2.5"), (Fraction(-3, 2), "-1.5")])
def test_format_number(value, text):
    assert format_number(value) == text
