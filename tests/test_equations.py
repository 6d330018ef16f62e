"""Equations a plan states, solved exactly by solve(); nothing in them is run as code."""

from fractions import Fraction

import pytest

from complm_cli.compose.plan import parse_plan
from complm_cli.experts.calculator import CalculationError, calculate, evaluate, to_formula


@pytest.mark.parametrize("formula, value", [
    # The problem: Sarah is 3 times as old as her son; in 12 years she is twice as old. (A chain said 24.)
    ('solve("s = 3 * c", "s + 12 = 2 * (c + 12)", "s")', 36),
    ('solve("s = 3 * c", "s + 12 = 2 * (c + 12)", "c")', 12),
    ("solve('x + 2 = 5', 'x')", 3),
    ('solve("2 * x = 7", "x")', Fraction(7, 2)),
    ('solve("p + q = 10", "p - q == 4", "q")', 3),
    ('solve("x^2 = 49", "x")', 7),  # two roots: the one that can be a count, an age or a price
    ('solve("x / 4 = 3", "x") + 1', 13),
    ('solve("i = t + 32", "t = 16", "i", "i")', 48),  # the unknown named twice, as the 1.5B planner wrote it
    # the value asked for may be an expression over the unknowns, as sampled plans write it
    ('solve("l = 60 / 2", "t = l / 2", "l - t")', 15),
    ('solve("x^2 = 49", "x + 1")', 8),
    # products written as by hand: a number or a bracket before a name or a bracket
    ('solve("2x + 5y = 2500", "x = 2y", "y")', Fraction(2500, 9)),
    ('solve("a = 3(d + 4)", "a + 2 = 2(d + 2) + 14", "a")', 24),
    ('solve("(a + 1)(2) = 10", "a")', 4),
    ('solve("x2 = 4", "x2 + 0.5x2")', 6),  # the 2 of x2 is part of its name; 0.5x2 is 0.5 * x2
])
def test_equations_are_solved_exactly(formula, value):
    assert to_formula(formula) == formula
    assert evaluate(formula) == value


@pytest.mark.parametrize("formula, reason", [
    ('solve("x = y", "x")', "fix no value"),
    ('solve("x + 1 = x", "x")', "fix no value"),
    ('solve("x^2 = -4", "x")', "fix no value"),
    ('solve("x = 1", "y")', "no equation mentions 'y'"),
    ('solve("x = 1", "2")', "'2' is not a number or a date"),  # neither a name nor an equation: refused up front
    ('solve("x + 1", "x")', "'x \\+ 1' is not one equation"),  # an expression may only be the value asked for
    ('solve("x = 1", "x + y")', "no equation mentions 'x \\+ y'"),
    ('solve("t = 5 + 5", "t = 10")', "must name the unknown asked for"),  # equations, and nothing asked for
    ('solve("x + y = 3", "x - y")', "fix no value"),
    ('solve("__import__(1) = 2", "x")', "not arithmetic"),
    ('solve("x.real = 2", "x")', "not arithmetic"),
    ('solve("x ** 100 = 2", "x")', "not arithmetic"),
    ('solve(5, "x")', "takes equations as text"),
])
def test_an_equation_that_fixes_nothing_or_is_no_arithmetic_is_a_reason(formula, reason):
    with pytest.raises(CalculationError, match=reason):
        evaluate(formula)


def test_an_equation_over_an_earlier_steps_answer_uses_its_number():
    calc = calculate('solve("x * {1} = 48", "x")', {1: ("How many legs does a spider have?", "A spider has 8 legs.")})
    assert calc.value == 6 and calc.expression == 'solve("x * 8 = 48", "x")'


def test_a_quoted_equation_outside_solve_is_no_formula():
    assert to_formula('"x = 3" + 1') is None


def test_a_plan_names_earlier_steps_and_numbers_inside_its_equations():
    raw = ('years = 12\nlegs = ask("How many legs does a spider have?")\n'
           'n = solve("x * legs = 48 + years - 12", "x")')
    parsed = parse_plan("Q?", raw)
    assert parsed.problems == []
    assert [(n.question, n.depends_on) for n in parsed.plan.nodes] == [
        ("How many legs does a spider have?", ()), ('solve("x * {1} = 48 + 12 - 12", "x")', (1,))]
