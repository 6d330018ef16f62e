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
from complm_cli.experts import dates, equations
from complm_cli.numbers import extract_number, format_number

MAX_FORMULA_CHARS = 300
MAX_NODES = 120
MAX_RESULT = Fraction(10) ** 100
MAX_POWER_BITS = 4096

_REF = re.compile(r"\{(\d+)\}")
_NUM = r"-?\d[\d,]*(?:\.\d+)?"
_OPERAND = rf"(\{{\d+\}}|{_NUM})"
_DAY = rf"(\{{\d+\}}|'?{dates.DATE}'?)"
_DATE_ONLY = rf"('?{dates.DATE}'?)"
_GAP = r"(?:passed|elapsed|are there|were there|is it|are|were|have passed)"
_LEAD = re.compile(
    r"^\s*(?:(?:what|how much) (?:is|are|does|do)(?: the (?:value|result) of)?|calculate|compute|evaluate|work out|find)\s*:?\s*",
    re.I,
)
FUNCTIONS = ("round", "abs", "min", "max", "sqrt", "floor", "ceil", "solve", *dates.FUNCTIONS)
# Only what a formula is made of: operands, operators, brackets, the whitelisted function names
# (longest first, so that `add_days` is not read as `days`) and quoted dates.
_FORMULA_CHARS = re.compile(rf"^(?:\s|\{{\d+\}}|\d|[.,+\-*/^×÷x%()]|{'|'.join(sorted(FUNCTIONS, key=len, reverse=True))})+$")
_QUOTED = re.compile(r"'[^'\n]*'|\"[^\"\n]*\"")


Value = Fraction | float | dt.date | str  # a number, a date, or a weekday's name


class CalculationError(ComplmError):
    """A calculation that cannot be done; it fails its node with this reason."""

    code = ExitCode.MODEL


@dataclass
class Calculation:
    formula: str  # with {N} references, as planned
    expression: str  # with the parents' numbers in place
    value: Value

    @property
    def result(self) -> str:
        """The value as an answer states it: a count of days with its unit, a date with its weekday."""
        if isinstance(self.value, dt.date):
            return dates.show(self.value)
        if isinstance(self.value, str):
            return self.value
        unit = _unit(self.formula)
        text = format_number(self.value)
        if unit == "weeks" and isinstance(self.value, Fraction) and self.value.denominator != 1:
            return f"{text} weeks ({format_number(self.value * 7)} days)"
        return f"{text} {unit}" if unit else text

    @property
    def answer(self) -> str:
        return f"{self.expression} = {self.result}" if self.expression != self.result else self.result


def _unit(formula: str) -> str:
    """What a formula that is one call of days(), weeks(), months() or years() counts."""
    m = re.fullmatch(r"\s*(\w+)\(.*\)\s*", formula)
    return dates.UNITS.get(m.group(1), "") if m else ""


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
        (rf"(?:how many|number of) days(?: {_GAP})? (?:between|from|since) {_DAY} (?:and|to|until|till) {_DAY}", "days({0}, {1})"),
        # Weeks, months and years between two steps' answers stay a difference of numbers (years
        # between two years); between two dates written out they are counted on the calendar.
        (rf"(?:how many|number of) (weeks|months|years)(?: {_GAP})? (?:between|from|since) {_DATE_ONLY} (?:and|to|until|till) {_DATE_ONLY}",
         lambda g: f"{g[0].lower()}({_quote_date(g[1])}, {_quote_date(g[2])})"),
        (rf"(?:(?:what|which) )?(?:date|day) (?:is|was|will it be|is it|was it) {o} (days?|weeks?) (after|from|later than|before|earlier than) {_DAY}",
         _shift),
        (rf"{o} (days?|weeks?) (after|from|later than|before|earlier than) {_DAY}", _shift),
        (rf"(?:on )?(?:what|which) day of the week (?:is|was|will be|does|did|falls on|fell on)? ?{_DAY}(?: (?:fall|falls|fell|land|be))?(?: on)?",
         "weekday({0})"),
        (rf"(?:what|which) weekday (?:is|was|will be) {_DAY}", "weekday({0})"),
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
    bare = operand.strip("'")
    return f"'{bare}'" if dates.is_date(bare) else operand


def _shift(groups: list) -> str:
    """`30 days after 2024-01-15` -> add_days('2024-01-15', 30)."""
    n, unit, direction, day = groups
    days = f"{n} * 7" if unit.lower().startswith("week") else n
    sign = "-" if direction.lower().startswith(("before", "earlier")) else ""
    return f"add_days({_quote_date(day)}, {sign}{days})"


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
    bare = _QUOTED.sub(lambda m: "0" if _quoted_value(m.group(0), t) else m.group(0), t)  # a date, an equation
    if _FORMULA_CHARS.match(bare) and re.search(r"[+\-*/^×÷%]|\w\(|\d\s*x\s*\d", bare) and re.search(r"\d", bare):
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


def _quoted_value(quoted: str, formula: str) -> bool:
    """A quoted text a formula may hold: a date, or an equation (or a name) given to solve()."""
    return dates.is_date(quoted) or ("solve(" in formula and equations.looks_like_equation(quoted))


def _to_python(formula: str) -> str:
    """Python's spelling of a formula; quoted dates are left as they are."""
    return outside_quotes(formula, _operators)


def outside_quotes(text: str, change) -> str:
    """`change` applied to the text between quoted strings (a quoted date keeps its words)."""
    parts, quoted = _QUOTED.split(text), _QUOTED.findall(text)
    return "".join(change(part) + (quoted[i] if i < len(quoted) else "") for i, part in enumerate(parts))


def _operators(f: str) -> str:
    f = f.replace("×", "*").replace("÷", "/").replace("^", "**")
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
    called = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
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
            if isinstance(node.value, str) and (dates.is_date(node.value) or equations.looks_like_equation(node.value)):
                continue  # an equation is only read by solve(): anywhere else it is "not a number"
            if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
                raise CalculationError(f"'{node.value}' is not a number or a date")
        elif isinstance(node, ast.Name):
            if not re.fullmatch(r"ref_\d+", node.id) and node.id not in FUNCTIONS:
                raise CalculationError(f"'{node.id}' is not a number or an allowed function")
            if node.id in FUNCTIONS and id(node) not in called:  # "4 * weeks": a function's name is not a value
                raise CalculationError(f"'{node.id}' is a function, not a number: write {node.id}(...)")
        elif isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS or node.keywords:
                raise CalculationError(f"only the functions {', '.join(FUNCTIONS)} are allowed")
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


def _call(name: str, args: list) -> Value:
    if name in dates.FUNCTIONS:
        try:
            return dates.call(name, args)
        except ValueError as exc:  # NotADate too
            raise CalculationError(str(exc)) from None
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
            return dates.parse(node.value) if dates.is_date(node.value) else _Text(node.value)
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
        if node.func.id == "solve":
            try:
                return equations.solve([_evaluate(a, refs) for a in node.args], refs)
            except equations.NotSolvable as exc:
                raise CalculationError(str(exc)) from None
        return _call(node.func.id, [_evaluate(a, refs) for a in node.args])
    left, right = _evaluate(node.left, refs), _evaluate(node.right, refs)
    if isinstance(left, dt.date) or isinstance(right, dt.date):
        return _date_arithmetic(node.op, left, right)
    a, b = _number(left), _number(right)
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


def _date_arithmetic(op: ast.operator, left: object, right: object) -> Value:
    """date - date is the days between them (signed); date + n and date - n move it by n days."""
    if isinstance(op, ast.Sub) and isinstance(left, dt.date) and isinstance(right, dt.date):
        return Fraction((left - right).days)
    if isinstance(op, ast.Add) and isinstance(right, dt.date):
        left, right = right, left
    if isinstance(op, (ast.Add, ast.Sub)) and isinstance(left, dt.date) and not isinstance(right, dt.date):
        n = _number(right)
        return _call("add_days", [left, -n if isinstance(op, ast.Sub) else n])
    raise CalculationError("dates can only be subtracted from each other, or moved by a number of days")


def evaluate(formula: str, refs: dict[int, object] | None = None) -> Value:
    """The value of `formula`, with {N} taken from `refs`; raises CalculationError with a reason."""
    if len(formula) > MAX_FORMULA_CHARS:
        raise CalculationError("the formula is too long")
    tree = _parse(_to_python(formula))
    _check(tree)
    return _value(tree, refs or {})


def _value(tree: ast.Expression, refs: dict[int, object]) -> Value:
    """The value of a checked formula's tree."""
    try:
        value = _evaluate(tree, refs)
    except (OverflowError, ValueError, ArithmeticError, RecursionError) as exc:
        raise CalculationError(f"the calculation failed ({exc})") from None
    if isinstance(value, _Text):
        raise CalculationError(f"'{value}' is not a number")
    return value


class _Text(str):
    """A quoted text that is no date: an equation or a name, which only solve() reads."""


def calculate(step: str, parents: dict[int, tuple[str, str]]) -> Calculation:
    """Do a calculation step: `parents` maps N to (its sub-question, its answer)."""
    formula = to_formula(step)
    if formula is None:
        raise CalculationError(f"'{step}' is not a calculation")
    tree = _parse(_to_python(formula))  # to_formula checked it
    dated = _date_refs(tree)
    refs: dict[int, object] = {}
    shown: dict[int, str] = {}
    for k in sorted({int(m) for m in _REF.findall(formula)}):
        if k not in parents:
            raise CalculationError(f"step {k}'s answer is missing")
        question, answer = parents[k]
        if k in dated:
            try:
                refs[k] = dates.find(answer)
            except dates.NotADate as exc:
                raise CalculationError(f"step {k}'s answer has {exc}") from None
            shown[k] = f"'{refs[k].isoformat()}'"
            continue
        value = extract_number(answer, question)
        if value is None:
            raise CalculationError(f"step {k}'s answer has no number in it ('{answer[:80]}')")
        refs[k], shown[k] = value, format_number(value)
    value = _value(tree, refs)
    expression = _REF.sub(lambda m: shown.get(int(m.group(1)), m.group(0)), formula)
    # Every date in one form, the form a step's date is shown in: '2024-03-01', not "March 1, 2024".
    expression = _QUOTED.sub(lambda m: f"'{dates.parse(m.group(0)).isoformat()}'" if dates.is_date(m.group(0)) else m.group(0),
                             expression)
    return Calculation(formula, " ".join(expression.split()), value)


def _date_refs(tree: ast.Expression) -> set[int]:
    """The steps whose answers a formula uses as dates: those in a date function's date places."""
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in dates.FUNCTIONS:
            for i in dates.FUNCTIONS[node.func.id][1]:
                if i < len(node.args) and isinstance(node.args[i], ast.Name) and node.args[i].id.startswith("ref_"):
                    found.add(int(node.args[i].id[4:]))
    return found
