"""Dates as calculator values: read them, find them in an answer, and the date functions.

A planner model counts days between dates wrongly more often than not (it
guessed 14 for the 46 days from 2024-01-15 to 2024-03-01, three times out of
three), so dates are values the calculator computes with exactly, as it does
numbers: `days(a, b)`, `weeks`, `months` and `years` between two dates (whole
months and years, as an age is counted), `add_days(date, n)` and
`weekday(date)`. A date is written as ISO (2024-01-15), "15 January 2024",
"January 15, 2024" or "Jan. 15 2024".
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
from fractions import Fraction

MONTHS = ("January|February|March|April|May|June|July|August|September|October|November|December|"
          "Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec")
_DAY_OF_MONTH = r"\d{1,2}(?:st|nd|rd|th)?"
# One date in running text, in any of the forms above.
DATE = (rf"(?:\d{{4}}-\d{{1,2}}-\d{{1,2}}|\d{{4}}/\d{{1,2}}/\d{{1,2}}"
        rf"|(?:{MONTHS})\.? {_DAY_OF_MONTH},? \d{{4}}|{_DAY_OF_MONTH} (?:of )?(?:{MONTHS})\.?,? \d{{4}})")
_DATE_RE = re.compile(DATE, re.I)
_FORMATS = ("%Y-%m-%d", "%Y/%m/%d", "%B %d %Y", "%b %d %Y", "%d %B %Y", "%d %b %Y")

# Each date function: how many arguments, and which of them are dates.
FUNCTIONS = {"days": (2, (0, 1)), "weeks": (2, (0, 1)), "months": (2, (0, 1)), "years": (2, (0, 1)),
             "add_days": (2, (0,)), "weekday": (1, (0,))}
# What the value of a function counts, said after it in an answer ("46 days").
UNITS = {"days": "days", "weeks": "weeks", "months": "months", "years": "years"}


class NotADate(ValueError):
    pass


def parse(text: str) -> dt.date:
    """One date, written in any of the forms the module knows; NotADate otherwise."""
    t = re.sub(r"(\d)(?:st|nd|rd|th)\b", r"\1", text.strip().strip("'\""), flags=re.I)
    t = re.sub(r"\b(Sept)\b", "Sep", t, flags=re.I)
    t = " ".join(t.replace(".", " ").replace(",", " ").replace(" of ", " ").split())
    for fmt in _FORMATS:
        try:
            return dt.datetime.strptime(t, fmt).date()
        except ValueError:
            continue
    raise NotADate(f"'{text.strip()}' is not a date")


def is_date(text: str) -> bool:
    try:
        parse(text)
    except NotADate:
        return False
    return True


def find(answer: str) -> dt.date:
    """The first whole date in an answer (a year alone is a number, not a date)."""
    for m in _DATE_RE.finditer(answer):
        try:
            return parse(m.group(0))
        except NotADate:
            continue
    raise NotADate(f"no date (day, month and year) in '{answer[:80]}'")


def _whole_months(a: dt.date, b: dt.date) -> int:
    """Whole calendar months from the earlier date to the later one, as an age is counted."""
    a, b = min(a, b), max(a, b)
    months = (b.year - a.year) * 12 + b.month - a.month
    return months - 1 if b.day < a.day else months


def call(name: str, args: list) -> Fraction | dt.date | str:
    """A date function on dates (dt.date) and numbers (Fraction); NotADate or ValueError when it cannot."""
    count, dated = FUNCTIONS[name]
    if len(args) != count:
        raise ValueError(f"{name}() takes {count} argument{'s' if count > 1 else ''}")
    args = [as_date(a) if i in dated else a for i, a in enumerate(args)]
    if name == "weekday":
        return calendar.day_name[args[0].weekday()]
    if name == "add_days":
        n = args[1]
        if not isinstance(n, Fraction) or n.denominator != 1:
            raise ValueError("add_days() adds a whole number of days")
        try:
            return args[0] + dt.timedelta(days=int(n))
        except OverflowError:
            raise ValueError("the date is out of range") from None
    days = abs((args[1] - args[0]).days)
    if name == "days":
        return Fraction(days)
    if name == "weeks":
        return Fraction(days, 7)
    months = _whole_months(args[0], args[1])
    return Fraction(months) if name == "months" else Fraction(months // 12)


def as_date(value: object) -> dt.date:
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        return parse(value)
    raise NotADate(f"'{value}' is not a date")


def show(value: dt.date) -> str:
    """A date as an answer gives it: ISO, with its weekday."""
    return f"{value.isoformat()} ({calendar.day_name[value.weekday()]})"
