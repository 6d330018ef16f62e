"""Equations a plan states, solved exactly: `solve("s = 3 * c", "s + 12 = 2 * (c + 12)", "s")`.

A problem defined by relations ("Sarah is 3 times as old as her son; in 12
years she will be twice as old as him") is where a chain of arithmetic steps
goes wrong: the planner computed 36, then went on past it to 48 - 24 = 24.
Stated as equations, it is solved by sympy, exactly, and the value asked
for is the one named last. Each side is read with Python's `ast` parser and
the same whitelist as the calculator's formulas (numbers, names, + - * / **,
brackets), and built into a sympy expression here: nothing a planner writes
is handed to sympy's own parser, which evaluates code.
"""

from __future__ import annotations

import ast
import re
from fractions import Fraction

MAX_EQUATIONS = 6
MAX_UNKNOWNS = 6
_NAME = re.compile(r"^[A-Za-z_]\w{0,40}$")
_REF = re.compile(r"\{(\d+)\}")
# "2x + 5y" and "3(d + 20)", as equations are written by hand: a number (not the end of a name such as x2)
# or a closing bracket directly before a name or an opening bracket multiplies it
_IMPLIED = re.compile(r"((?<![\w.])\d+(?:\.\d+)?|\))(?=\s*[A-Za-z_(])")


class NotSolvable(ValueError):
    pass


def looks_like_equation(text: str) -> bool:
    """A quoted text a formula may hand to solve(): an equation over numbers and names, a name, or an
    expression over names (the value asked for: solve("l = 60 / 2", "t = l / 2", "l - t"))."""
    t = text.strip().strip("'\"")
    return bool(_NAME.match(t)) or (t.count("=") <= 2 and bool(re.search(r"[A-Za-z_]", t))
                                    and bool(re.fullmatch(r"[\w\s.+\-*/^(){}=,]+", t)))


def solve(args: list, refs: dict[int, Fraction | float]) -> Fraction | float:
    """The value of the last argument (an unknown's name, or an expression over the unknowns) that
    satisfies the equations before it."""
    import sympy

    if len(args) < 2 or not all(isinstance(a, str) for a in args):
        raise NotSolvable('solve() takes equations as text, then the name asked for: solve("x + 2 = 5", "x")')
    *texts, wanted = (a.strip() for a in args)
    texts = [t for t in texts if not _NAME.match(t)]  # solve("i = t + 32", "i", "i"): a name listed twice is no equation
    if "=" in wanted:
        raise NotSolvable(f"solve()'s last argument must name the unknown asked for, not '{wanted}'")
    if len(texts) > MAX_EQUATIONS:
        raise NotSolvable(f"solve() takes at most {MAX_EQUATIONS} equations")
    symbols: dict[str, sympy.Symbol] = {}
    equations = [_equation(text, refs, symbols) for text in texts]
    known = set(symbols)
    asked = _expression(_answered(wanted, refs), symbols)
    if not asked.free_symbols or any(str(s) not in known for s in asked.free_symbols):
        raise NotSolvable(f"no equation mentions '{wanted}'")
    if len(symbols) > MAX_UNKNOWNS:
        raise NotSolvable(f"solve() takes at most {MAX_UNKNOWNS} unknowns")
    try:
        solutions = sympy.solve(equations, list(symbols.values()), dict=True)
    except (NotImplementedError, ValueError, TypeError) as exc:
        raise NotSolvable(f"the equations could not be solved ({exc})") from None
    # an unknown a solution leaves free stays a symbol: that value is not known to be real, and is refused
    values = {asked.subs(s) for s in solutions}
    values = {v for v in values if v.is_real}
    if not values:
        raise NotSolvable(f"the equations fix no value of '{wanted}'")
    if len(values) > 1:
        positive = {v for v in values if v >= 0}  # an age, a count or a price: the one that can be
        if len(positive) != 1:
            raise NotSolvable(f"the equations allow more than one value of '{wanted}'")
        values = positive
    value = values.pop()
    if value.free_symbols:
        raise NotSolvable(f"the equations do not fix '{wanted}' (it depends on {', '.join(map(str, value.free_symbols))})")
    if value.is_Rational:
        return Fraction(int(value.p), int(value.q))
    return float(value)


def _equation(text: str, refs: dict[int, Fraction | float], symbols: dict):
    import sympy

    body = _answered(text, refs).replace("^", "**").replace("==", "=")
    if body.count("=") != 1:
        raise NotSolvable(f"'{text}' is not one equation (left = right)")
    left, right = body.split("=")
    return sympy.Eq(_expression(left, symbols), _expression(right, symbols))


def _answered(text: str, refs: dict[int, Fraction | float]) -> str:
    """`text` with each {N} written as step N's answer."""
    return _REF.sub(lambda m: _ref(int(m.group(1)), refs), text)


def _ref(k: int, refs: dict[int, Fraction | float]) -> str:
    if k not in refs:
        raise NotSolvable(f"step {k}'s answer is missing")
    value = refs[k]
    return f"({value.numerator}/{value.denominator})" if isinstance(value, Fraction) else f"({value!r})"


def _expression(text: str, symbols: dict):
    import sympy

    text = _IMPLIED.sub(r"\1*", text)
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError):
        raise NotSolvable(f"'{text.strip()}' is not an expression") from None

    def build(node: ast.AST):
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            return sympy.Rational(repr(node.value)) if isinstance(node.value, float) else sympy.Integer(node.value)
        if isinstance(node, ast.Name) and _NAME.match(node.id):
            return symbols.setdefault(node.id, sympy.Symbol(node.id))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            inner = build(node.operand)
            return -inner if isinstance(node.op, ast.USub) else inner
        if isinstance(node, ast.BinOp):
            a, b = build(node.left), build(node.right)
            if isinstance(node.op, ast.Add):
                return a + b
            if isinstance(node.op, ast.Sub):
                return a - b
            if isinstance(node.op, ast.Mult):
                return a * b
            if isinstance(node.op, ast.Div):
                return a / b
            if isinstance(node.op, ast.Pow) and b.is_Integer and abs(int(b)) <= 8:
                return a**b
        raise NotSolvable(f"'{ast.unparse(node)}' is not arithmetic over numbers and names")

    return build(tree.body)
