"""Questions that ask the same thing of a long list: how many parts, and the list split into steps.

"What are the capitals of Ghana, Kenya, ..., and Peru?" with 30 countries
was one step whose answer stopped at its 256-token limit ("(24) The capital
of Ghana is") and still passed as complete. Such a question needs no model
to plan it: the same question over a few items at a time is a fan-out whose
steps decode together in one batch, each short enough to finish, and whose
answers are listed in order. A list of a few items stays the planner's.
"""

from __future__ import annotations

import math
import re

LONG_LIST = 8  # items from which a list is split into steps without the planner
MAX_ITEM_WORDS = 5  # longer pieces between commas are clauses, not items of a list
# The words a list follows: "the capitals OF", "symbols FOR", "What ARE".
_LEAD_END = re.compile(r"\b(?:of|for|in|from|between|about|are|is|were|was|among|on)\s+", re.I)
_LAST = re.compile(r"^(.*\S)\s+(?:and|&)\s+(\S.*)$", re.I | re.S)


def list_items(question: str) -> tuple[str, list[str], str] | None:
    """(lead, items, end) of a question that asks about a list ("A, B, C and D"); None for fewer than three items."""
    text = question.strip()
    body = text.rstrip("?.!").rstrip()
    end = text[len(body):]
    first_comma = body.find(",")
    if first_comma < 0:
        return None
    leads = list(_LEAD_END.finditer(body, 0, first_comma))
    if not leads:
        return None
    lead = body[: leads[-1].end()]
    pieces = [p.strip() for p in body[leads[-1].end():].split(",")]
    last = re.sub(r"^(?:and|&)\s+", "", pieces[-1], flags=re.I)
    if last == pieces[-1]:  # no Oxford comma: "B and C" is the last piece
        m = _LAST.match(last)
        if not m:
            return None
        pieces[-1:] = [m.group(1), m.group(2)]
    else:
        pieces[-1] = last
    if len(pieces) < 3 or any(not p or len(p.split()) > MAX_ITEM_WORDS for p in pieces):
        return None
    return lead, pieces, end


def parts(question: str) -> int:
    """How many things a question asks for: the items of its list, else 1."""
    found = list_items(question)
    return len(found[1]) if found else 1


def split_long_list(question: str, max_steps: int) -> list[str] | None:
    """The question over a share of its list at a time, in order; None unless the list is long.

    At most `max_steps` steps, each with as few items as that allows, so every item is in one step."""
    found = list_items(question)
    if not found or len(found[1]) < LONG_LIST:
        return None
    lead, items, end = found
    size = max(math.ceil(len(items) / max_steps), 3)
    steps = []
    for start in range(0, len(items), size):
        chunk = items[start : start + size]
        listed = chunk[0] if len(chunk) == 1 else f"{', '.join(chunk[:-1])} and {chunk[-1]}"
        steps.append(f"{lead}{listed}{end}")
    return steps


def room(question: str, base: int, per_part: int = 24, most: int = 2048) -> int:
    """Tokens an answer may take: the expert's own cap, more where the question asks for many parts."""
    return min(max(base, per_part * parts(question) + 64), max(base, most))
