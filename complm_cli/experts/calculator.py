"""The calculator expert: exact arithmetic over numbers and earlier answers, never code.

A plan step is a calculation when it is a formula (`{1} + {2}`, `48 / 2`,
`round({1} * 1.15, 2)`) or arithmetic said in words ("the sum of {1} and
{2}", "15% of {1}", "how many years between {1} and {2}"). `to_formula`
turns either into one formula; `calculate` reads each parent's number from
its answer and evaluates the formula on an expression tree built by Python's
`ast` parser, with a whitelist of operators and functions and bounds on
sizes, so nothing a planner or a user writes can run as code.
"""

from __future__ import annotations

import ast
import datetime as dt
import math
import re
from dataclasses import dataclass
from fractions import Fraction

from complm_cli.errors import ComplmError, ExitCode
from complm_cli.numbers import extract_number, format_number

MAX_FORMULA_CHARS = 300
MAX_NODES = 120
MAX_RESULT = Fraction(10) ** 100
MAX_POWER_BITS = 4096

_REF = re.compile(r"\{(\d+)\}")
_NUM = r"-?\d[\d,]*(?:\.\d+)?"
_OPERAND = rf"(\{{\d+\}}|{_NUM})"
_DAY = r"(\{\d+\}|'?\d{4}-\d{2}-\d{2}'?)"
_GAP = r"(?:passed|elapsed|are there|were there|is it|are|were|have passed)"
_LEAD = re.compile(
    r"^\s*(?:(?:what|how much) (?:is|are|does|do)(?: the (?:value|result) of)?|calculate|compute|evaluate|work out|find)\s*:?\s*",
    re.I,
)
_FUNCS = ("round", "abs", "min", "max", "sqrt", "floor", "ceil", "days")
# Only what a formula is made of: operands, operators, brackets and the whitelisted function names.
_FORMULA_CHARS = re.compile(rf"^(?:\s|\{{\d+\}}|\d|[.,+\-*/^×÷x%()]|{'|'.join(_FUNCS)})+$")


class CalculationError(ComplmError):
    """A calculation that cannot be done; it fails its node with this reason."""

    code = ExitCode.MODEL


@dataclass
class Calculation:
    formula: str  # with {N} references, as planned
    expression: str  # with the parents' numbers in place
    value: Fraction | float

    @property
    def result(self) -> str:
        return format_number(self.value)

    @property
    def answer(self) -> str:
        return f"{self.expression} = {self.result}" if self.expression != self.result else self.result


def _words(text: str) -> str | None:
    """Arithmetic said in words, as a formula; None when the text says something else."""
    t = text.strip().rstrip("?.!").strip()
    t = re.sub(r"^(?:the\s+)", "", _LEAD.sub("", t), flags=re.I)
    o = _OPERAND
    rest = rf"((?:\s*,\s*{o})*)(?:,?\s+and\s+{o})"
    patterns: list[tuple[str, object]] = [
        (rf"(?:sum|total) of {o}{rest}", lambda g: " + ".join(_operands(g))),
        (rf"(?:average|mean) of {o}{rest}", lambda g: f"({' + '.join(_operands(g))}) / {len(_operands(g))}"),
        (rf"{o} (?:plus|added to) {o}", "{0} + {1}"),
        (rf"add {o} (?:and|to) {o}", "{0} + {1}"),
        (rf"product of {o} and {o}", "{0} * {1}"),
        (rf"{o} (?:times|multiplied by) {o}", "{0} * {1}"),
        (rf"{o} minus {o}", "{0} - {1}"),
        (rf"subtract {o} from {o}", "{1} - {0}"),
        (rf"(?:difference|gap) between {o} and {o}", "abs({0} - {1})"),
        (rf"(?:how many|number of) days(?: {_GAP})? (?:between|from) {_DAY} (?:and|to|until) {_DAY}", "days({0}, {1})"),
        (rf"(?:how many|number of) (?:years|hours|minutes|seconds)(?: {_GAP})? (?:between|from) {o} (?:and|to|until) {o}", "abs({1} - {0})"),
        (rf"{o} divided by {o}", "{0} / {1}"),
        (rf"(?:quotient|ratio) of {o} (?:and|to) {o}", "{0} / {1}"),
        (rf"{o}\s*(?:%|percent) of {o}", "{0} / 100 * {1}"),
        (rf"square root of {o}", "sqrt({0})"),
        (rf"{o} squared", "{0} ** 2"),
        (rf"{o} cubed", "{0} ** 3"),
    ]
    for pattern, template in patterns:
        m = re.fullmatch(pattern, t, re.I)
        if m:
            groups = [g for g in m.groups()]
            if callable(template):
                return template(groups)
            return template.format(*[_quote_date(g) for g in groups if g is not None])
    return None


def _quote_date(operand: str) -> str:
    return "'" + operand.strip("'") + "'" if re.fullmatch(r"'?\d{4}-\d{2}-\d{2}'?", operand) else operand


def _operands(groups: tuple | list) -> list[str]:
    """The operands of a 'sum of A, B and C' match: the first, the comma list, the last."""
    first, middle, last = groups[0], groups[1] or "", groups[-1]
    return [first, *re.findall(_OPERAND, middle), last]


def to_formula(text: str) -> str | None:
    """The formula a plan step asks for, or None when the step is not a calculation."""
    if not text or len(text) > MAX_FORMULA_CHARS:
        return None
    t = _LEAD.sub("", text.strip()).strip().rstrip("?.!=").strip()
    if not t:
        return None
    if _FORMULA_CHARS.match(t) and re.search(r"[+\-*/^×÷%]|\w\(|\d\s*x\s*\d", t) and re.search(r"\d", t):
        formula = t
    else:
        formula = _words(text)
        if formula is None:
            return None
    try:
        _check(_parse(_to_python(formula)))
    except CalculationError:
        return None
    return formula


def _to_python(formula: str) -> str:
    f = formula.replace("×", "*").replace("÷", "/").replace("^", "**")
    f = re.sub(r"(?<=[\d)}])\s*x\s*(?=[\d({])", " * ", f)  # 3 x 4
    f = re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", f)  # thousands separators
    f = re.sub(r"(\d+(?:\.\d+)?)\s*%(?!\s*[\d({])", r"(\1 / 100)", f)  # 25% (but 7 % 4 is a remainder)
    return _REF.sub(lambda m: f"ref_{m.group(1)}", f)


def _parse(source: str) -> ast.Expression:
    try:
        return ast.parse(source.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise CalculationError(f"'{source}' is not a formula") from None


def _check(tree: ast.Expression) -> None:
    """Refuse anything that is not plain arithmetic before evaluating."""
    count = 0
    for node in ast.walk(tree):
        count += 1
        if count > MAX_NODES:
            raise CalculationError("the formula is too long")
        if isinstance(node, (ast.Expression, ast.Load, ast.operator, ast.unaryop)):
            continue
        if isinstance(node, ast.BinOp):
            if not isinstance(node.op, (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow)):
                raise CalculationError("only + - * / // % and ** are allowed")
        elif isinstance(node, ast.UnaryOp):
            if not isinstance(node.op, (ast.UAdd, ast.USub)):
                raise CalculationError("only + and - signs are allowed")
        elif isinstance(node, ast.Constant):
            if isinstance(node.value, bool) or not isinstance(node.value, (int, float, str)):
                raise CalculationError(f"'{node.value!r}' is not a number")
        elif isinstance(node, ast.Name):
            if not re.fullmatch(r"ref_\d+", node.id) and node.id not in _FUNCS:
                raise CalculationError(f"'{node.id}' is not a number or an allowed function")
        elif isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCS or node.keywords:
                raise CalculationError(f"only the functions {', '.join(_FUNCS)} are allowed")
        else:
            raise CalculationError(f"'{type(node).__name__}' is not arithmetic")


def _number(value: object) -> Fraction | float:
    if isinstance(value, (Fraction, float)):
        return value
    raise CalculationError(f"'{value}' is not a number")


def _power(base: Fraction | float, exponent: Fraction | float) -> Fraction | float:
    if isinstance(exponent, Fraction) and exponent.denominator == 1 and isinstance(base, Fraction):
        e = exponent.numerator
        bits = max(abs(base.numerator), abs(base.denominator)).bit_length() * abs(e)
        if bits > MAX_POWER_BITS:
            raise CalculationError("the power is too large")
        if base == 0 and e < 0:
            raise CalculationError("division by zero")
        return base**e
    if abs(float(exponent)) > 1000:
        raise CalculationError("the power is too large")
    try:
        out = float(base) ** float(exponent)
    except (OverflowError, ZeroDivisionError):
        raise CalculationError("the power is too large or divides by zero") from None
    if isinstance(out, complex):
        raise CalculationError("the power has no real value")
    return out


def _date(value: object) -> dt.date:
    if isinstance(value, dt.date):
        return value
    text = str(value).strip()
    for fmt in ("%Y-%m-%d", "%B %d, %Y", "%b %d, %Y", "%B %d %Y", "%b %d %Y", "%d %B %Y", "%d %b %Y", "%Y/%m/%d"):
        try:
            return dt.datetime.strptime(text, fmt).date()
        except ValueError:
            continue
    raise CalculationError(f"'{text}' is not a date")


def _call(name: str, args: list) -> Fraction | float:
    if name == "days":
        if len(args) != 2:
            raise CalculationError("days() takes two dates")
        return Fraction(abs((_date(args[1]) - _date(args[0])).days))
    nums = [_number(a) for a in args]
    if name in ("min", "max"):
        if not nums:
            raise CalculationError(f"{name}() needs numbers")
        return min(nums) if name == "min" else max(nums)
    if name == "round":
        if len(nums) not in (1, 2) or (len(nums) == 2 and (not isinstance(nums[1], Fraction) or nums[1].denominator != 1 or abs(nums[1]) > 20)):
            raise CalculationError("round() takes a number and at most 20 decimal places")
        x = nums[0] if isinstance(nums[0], Fraction) else Fraction(nums[0])
        return round(x, int(nums[1])) if len(nums) == 2 else Fraction(round(x))
    if len(nums) != 1:
        raise CalculationError(f"{name}() takes one number")
    x = nums[0]
    if name == "abs":
        return abs(x)
    if name == "sqrt":
        if x < 0:
            raise CalculationError("the square root of a negative number")
        root = math.isqrt(x.numerator) if isinstance(x, Fraction) and x.denominator == 1 and x >= 0 else None
        return Fraction(root) if root is not None and root * root == x else math.sqrt(x)
    return Fraction(math.floor(x) if name == "floor" else math.ceil(x))


def _evaluate(node: ast.AST, refs: dict[int, object]) -> object:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body, refs)
    if isinstance(node, ast.Constant):
        if isinstance(node.value, str):
            return node.value
        return Fraction(repr(node.value)) if isinstance(node.value, float) else Fraction(node.value)
    if isinstance(node, ast.Name):
        k = int(node.id[4:])
        if k not in refs:
            raise CalculationError(f"step {k}'s answer is missing")
        return refs[k]
    if isinstance(node, ast.UnaryOp):
        x = _number(_evaluate(node.operand, refs))
        return -x if isinstance(node.op, ast.USub) else x
    if isinstance(node, ast.Call):
        return _call(node.func.id, [_evaluate(a, refs) for a in node.args])
    a, b = _number(_evaluate(node.left, refs)), _number(_evaluate(node.right, refs))
    op = node.op
    if isinstance(op, (ast.Div, ast.FloorDiv, ast.Mod)) and b == 0:
        raise CalculationError("division by zero")
    if isinstance(op, ast.Pow):
        out = _power(a, b)
    elif isinstance(op, ast.Add):
        out = a + b
    elif isinstance(op, ast.Sub):
        out = a - b
    elif isinstance(op, ast.Mult):
        out = a * b
    elif isinstance(op, ast.Div):
        out = Fraction(a) / Fraction(b) if isinstance(a, Fraction) and isinstance(b, Fraction) else a / b
    elif isinstance(op, ast.FloorDiv):
        out = Fraction(math.floor(a / b))
    else:
        out = a % b
    if abs(out) > MAX_RESULT:
        raise CalculationError("the result is too large")
    return out


def evaluate(formula: str, refs: dict[int, object] | None = None) -> Fraction | float:
    """The value of `formula`, with {N} taken from `refs`; raises CalculationError with a reason."""
    if len(formula) > MAX_FORMULA_CHARS:
        raise CalculationError("the formula is too long")
    tree = _parse(_to_python(formula))
    _check(tree)
    try:
        value = _evaluate(tree, refs or {})
    except (OverflowError, ValueError, ArithmeticError, RecursionError) as exc:
        raise CalculationError(f"the calculation failed ({exc})") from None
    if isinstance(value, str):
        raise CalculationError(f"'{value}' is not a number")
    return value


def calculate(step: str, parents: dict[int, tuple[str, str]]) -> Calculation:
    """Do a calculation step: `parents` maps N to (its sub-question, its answer)."""
    formula = to_formula(step)
    if formula is None:
        raise CalculationError(f"'{step}' is not a calculation")
    dates = "days(" in formula
    refs: dict[int, object] = {}
    shown: dict[int, str] = {}
    for k in sorted({int(m) for m in _REF.findall(formula)}):
        if k not in parents:
            raise CalculationError(f"step {k}'s answer is missing")
        question, answer = parents[k]
        if dates:
            refs[k] = _find_date(answer)
            shown[k] = f"'{refs[k].isoformat()}'"
            continue
        value = extract_number(answer, question)
        if value is None:
            raise CalculationError(f"step {k}'s answer has no number in it ('{answer[:80]}')")
        refs[k], shown[k] = value, format_number(value)
    value = evaluate(formula, refs)
    expression = _REF.sub(lambda m: shown.get(int(m.group(1)), m.group(0)), formula)
    return Calculation(formula, " ".join(expression.split()), value)


_DATE_PATTERNS = (
    re.compile(r"\d{4}-\d{2}-\d{2}"),
    re.compile(r"(?:January|February|March|April|May|June|July|August|September|October|November|December|"
               r"Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec)\.? \d{1,2},? \d{4}"),
    re.compile(r"\d{1,2} (?:January|February|March|April|May|June|July|August|September|October|November|December) \d{4}"),
)


def _find_date(answer: str) -> dt.date:
    for pattern in _DATE_PATTERNS:
        m = pattern.search(answer)
        if m:
            return _date(m.group(0).replace(".", "").replace(",", ""))
    raise CalculationError(f"no date found in '{answer[:80]}'")
