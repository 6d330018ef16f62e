"""Dates as calculator values: every form of a date question becomes an exact formula, with the right answer."""

import datetime as dt
from fractions import Fraction

import pytest

from complm_cli.experts import dates
from complm_cli.experts.calculator import CalculationError, calculate, evaluate, to_formula


@pytest.mark.parametrize("text, day", [
    ("2024-01-15", dt.date(2024, 1, 15)),
    ("2024/1/5", dt.date(2024, 1, 5)),
    ("15 January 2024", dt.date(2024, 1, 15)),
    ("15th of January, 2024", dt.date(2024, 1, 15)),
    ("January 15, 2024", dt.date(2024, 1, 15)),
    ("Jan 15, 2024", dt.date(2024, 1, 15)),
    ("Jan. 15 2024", dt.date(2024, 1, 15)),
    ("Sept 3, 2021", dt.date(2021, 9, 3)),
    ("'2024-03-01'", dt.date(2024, 3, 1)),
])
def test_a_date_is_read_in_every_form_the_calculator_takes(text, day):
    assert dates.parse(text) == day


@pytest.mark.parametrize("text", ["2024-02-30", "1990", "January 2024", "hello", "15/01/2024"])
def test_what_is_not_a_whole_date_is_refused(text):
    with pytest.raises(dates.NotADate):
        dates.parse(text)


@pytest.mark.parametrize("question, answer", [
    # The question, in its own wording and the README's.
    ("How many days are there between 2024-01-15 and 2024-03-01?", "46 days"),
    ("how many days between 2024-01-15 and 2024-03-01", "46 days"),
    ("How many days between 15 January 2024 and March 1, 2024?", "46 days"),
    ("How many days passed from Jan 15, 2024 until 1 March 2024?", "46 days"),
    ("How many days are there between 2023-12-25 and 2024-12-25?", "366 days"),  # a leap year
    ("How many weeks are there between 2024-01-01 and 2024-02-26?", "8 weeks"),
    ("How many weeks between Jan 15, 2024 and 2024-03-01?", "6.571429 weeks (46 days)"),
    ("How many months are there between 2020-05-31 and 2021-02-28?", "8 months"),  # whole months, as an age
    ("How many years between 1990-06-15 and 2024-06-14?", "33 years"),
    ("How many years between 1990-06-15 and 2024-06-15?", "34 years"),
    ("What date is 30 days after 2024-01-15?", "2024-02-14 (Wednesday)"),
    ("What day is 2 weeks before 1 March 2024?", "2024-02-16 (Friday)"),
    ("What date was 10 days before January 5, 2024?", "2023-12-26 (Tuesday)"),
    ("What day of the week was 2024-03-01?", "Friday"),
    ("On what day of the week did 4 July 1776 fall?", "Thursday"),
    ("What weekday is 25 December 2030?", "Wednesday"),
])
def test_date_questions_are_computed_exactly(question, answer):
    assert to_formula(question) is not None, question
    assert calculate(question, {}).result == answer


def test_formulas_take_quoted_dates_and_date_arithmetic():
    assert evaluate("days('2024-01-15', '2024-03-01')") == 46
    assert evaluate("'2024-03-01' - '2024-01-15'") == 46  # date - date: the days between
    assert evaluate("'2024-03-01' - 1") == dt.date(2024, 2, 29)  # date - n: n days earlier
    assert evaluate("1 + '2024-02-28'") == dt.date(2024, 2, 29)
    assert evaluate("add_days('2024-12-31', 1)") == dt.date(2025, 1, 1)
    assert evaluate("weeks('2024-01-01', '2024-01-15') * 2") == Fraction(4)
    assert to_formula("add_days('2024-01-15', 30)") == "add_days('2024-01-15', 30)"


@pytest.mark.parametrize("formula, reason", [
    ("'2024-03-01' + '2024-01-15'", "dates can only be subtracted"),
    ("'2024-03-01' * 2", "dates can only be subtracted"),
    ("add_days('2024-01-15', 1.5)", "whole number of days"),
    ("days('2024-01-15')", "takes 2 arguments"),
    ("weekday(5)", "not a date"),
    ("add_days('9999-12-31', 1)", "out of range"),
])
def test_what_cannot_be_done_with_dates_is_a_reason_not_a_guess(formula, reason):
    with pytest.raises(CalculationError, match=reason):
        evaluate(formula)


def test_a_quoted_text_that_is_no_date_is_not_a_formula():
    assert to_formula("days('hello', 'world')") is None
    assert to_formula("'hello' + 1") is None


def test_steps_answers_are_read_as_dates_where_a_date_function_takes_them():
    parents = {1: ("When did Apollo 11 land on the Moon?", "Apollo 11 landed on July 20, 1969."),
               2: ("When did the Berlin Wall fall?", "It fell on 9 November 1989.")}
    calc = calculate("How many days between {1} and {2}?", parents)
    assert calc.result == f"{(dt.date(1989, 11, 9) - dt.date(1969, 7, 20)).days} days"
    assert calc.expression == "days('1969-07-20', '1989-11-09')"
    assert calculate("weekday({1})", parents).result == "Sunday"
    assert calculate("add_days({2}, 7 * {3})", {**parents, 3: ("How many weeks?", "2 weeks")}).result == "1989-11-23 (Thursday)"
    # A year alone is a number, not a date: the step fails with the reason instead of guessing a day.
    with pytest.raises(CalculationError, match="no date"):
        calculate("weekday({1})", {1: ("When?", "In 1969.")})
    # Years between two years stay a difference of numbers.
    assert calculate("How many years between {1} and {2}?", {1: ("a", "1969"), 2: ("b", "1989")}).result == "20"
