"""Numbers out of sentences: what a calculation step reads from its parents' answers.

A parent answers in words ("A spider has eight legs.", "It fell in 1989.",
"about 1.4 million people"); the calculator needs the number. Values are
exact Fractions so that "0.1" stays one tenth.
"""

from __future__ import annotations

import re
from fractions import Fraction

# Number words, shared with metrics.py (which reads them in answers being scored).
UNITS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
    "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19,
}
TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90}
_SCALES = {"hundred": 100, "thousand": 1000, "million": 10**6, "billion": 10**9, "trillion": 10**12}

# 1,234,567.89 | 1234.5 | .5 ; an optional sign; "1.4 million" takes its scale word.
_DIGITS = re.compile(
    r"(?<![\w.])(?P<sign>[-\u2212])?(?:\$|€|£)?(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)"
    r"(?:\s*(?P<scale>hundred|thousand|million|billion|trillion)\b)?(?P<pct>\s*(?:%|percent\b))?",
    re.I,
)
_WORDS = "|".join(sorted([*UNITS, *TENS, *_SCALES, "and"], key=len, reverse=True))
_WORD_NUMBER = re.compile(rf"\b(?:{_WORDS})(?:[\s-]+(?:{_WORDS}))*\b", re.I)
_DOZEN = re.compile(r"\b(a|one|two|three|four|five|six|half a)\s+dozen\b", re.I)


def _words_value(text: str) -> int | None:
    """'one hundred and twenty-three' -> 123; None when the words are not a number."""
    total = current = 0
    seen = False
    for word in re.split(r"[\s-]+", text.lower()):
        if word == "and":
            continue
        if word in UNITS:
            current += UNITS[word]
        elif word in TENS:
            current += TENS[word]
        elif word == "hundred":
            current = (current or 1) * 100
        elif word in _SCALES:
            total += (current or 1) * _SCALES[word]
            current = 0
        else:
            return None
        seen = True
    return total + current if seen else None


def digits_of(source: str) -> Fraction:
    """The figure a number written in digits shows, without its sign, scale or percent: "$32 million" -> 32,
    "-.5" -> 1/2. `source` is the text find_numbers gives for a number it found in digits."""
    return Fraction(_DIGITS.match(source).group("num").replace(",", ""))


def find_numbers(text: str) -> list[tuple[int, Fraction, str]]:
    """Every number in `text` as (position, value, the text it came from), in reading order."""
    found: list[tuple[int, Fraction, str]] = []
    taken: list[range] = []
    for m in _DIGITS.finditer(text):
        value = Fraction(m.group("num").replace(",", ""))
        if m.group("scale"):
            value *= _SCALES[m.group("scale").lower()]
        if m.group("sign"):
            value = -value
        found.append((m.start(), value, m.group(0).strip()))
        taken.append(range(m.start(), m.end()))
    for m in _DOZEN.finditer(text):
        count = {"a": 1, "one": 1, "half a": Fraction(1, 2)}.get(m.group(1).lower(), UNITS.get(m.group(1).lower(), 1))
        found.append((m.start(), Fraction(count) * 12, m.group(0)))
        taken.append(range(m.start(), m.end()))
    for m in _WORD_NUMBER.finditer(text):
        if any(m.start() in r for r in taken):
            continue
        words = m.group(0).strip()
        if words.lower() in ("and",) or words.lower().startswith("and ") or words.lower().endswith(" and"):
            words = re.sub(r"^(and\s+)+|(\s+and)+$", "", words, flags=re.I)
            if not words or words.lower() == "and":
                continue
        value = _words_value(words)
        if value is not None:
            found.append((m.start(), Fraction(value), words))
    found.sort(key=lambda item: item[0])
    return found


_ASKS_YEAR = re.compile(r"\b(?:what|which) year\b|\bwhen\b|\byear\b", re.I)


def extract_number(answer: str, question: str = "") -> Fraction | None:
    """The number an answer gives for its question.

    Numbers that the question itself states ("the population in 2010") are
    passed over, so the answer's own figure is taken; otherwise the first one.
    An answer of the form "... = 42" gives the number after the last "="."""
    if "=" in answer:
        tail = find_numbers(answer.rsplit("=", 1)[1])
        if tail:
            return tail[0][1]
    numbers = find_numbers(answer)
    if not numbers:
        return None
    stated = {value for _, value, _ in find_numbers(question)}
    fresh = [value for _, value, _ in numbers if value not in stated]
    if _ASKS_YEAR.search(question):
        # "It fell on November 9, 1989": a question about a year wants the year, not the day.
        years = [v for v in fresh if v.denominator == 1 and 1000 <= v <= 2200]
        fresh = years or fresh
    return fresh[0] if fresh else numbers[0][1]


def format_number(value: Fraction | float | int, places: int = 6) -> str:
    """An exact integer as is; anything else rounded to `places` decimals without trailing zeros."""
    if isinstance(value, Fraction) and value.denominator == 1:
        return str(value.numerator)
    if isinstance(value, int):
        return str(value)
    number = float(value)
    if number.is_integer() and abs(number) < 1e15:
        return str(int(number))
    text = f"{number:.{places}f}".rstrip("0").rstrip(".")
    return text if text not in ("-0", "") else "0"
