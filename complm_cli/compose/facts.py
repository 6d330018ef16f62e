"""What a sub-answer states: its key facts, and where an answer has stated one.

The aggregator checks that every part's key facts reach the final answer; the
executor ends an intermediate answer (one that only feeds later steps or the
aggregator) as soon as a sentence of it states what its sub-question asks
for, since the rest (a painting's size after the painter's name) costs
decoding time and crowds the next step's question.
"""

from __future__ import annotations

import re

from complm_cli.compose import prompts
from complm_cli.numbers import find_numbers

# Capitalised because they start a sentence, not because they name the answer.
_COMMON = frozenset("""The This That These Those There Their They Then Than It Its Yes And But However
Answer Sure Here His Her She For From With When Where Which What Who Why How""".split())

# A sentence ends at . ! or ? (perhaps closing a quote or bracket) followed by white space.
_SENTENCE_END = re.compile(r"[.!?][\"')\]]?\s")
_YES_NO = re.compile(r"^\W*(yes|no)\b", re.I)
MIN_WORDS = 3  # "1. Paris" is a list item, not a sentence
# A period after these ends an abbreviation or an initial, not a sentence ("Dr. John E. Smith", "the U.S. Army").
_ABBREVIATION = re.compile(r"(?:\b[A-Za-z]|\b(?:Dr|Mr|Mrs|Ms|Prof|St|Jr|Sr|Gen|Col|Lt|Capt|Sgt|Rev|Hon|Gov|Sen|Rep|Inc|Ltd|Co"
                           r"|Corp|Bros|Mt|Ft|No|vs|etc|approx|ca)|[A-Za-z]\.[A-Za-z])\.$")


def _new_numbers(answer: str, question: str) -> set[str]:
    stated = {v for _, v, _ in find_numbers(question)}
    return {str(v) for _, v, _ in find_numbers(answer) if v not in stated}


def _new_names(answer: str, question: str) -> set[str]:
    asked = set(re.findall(r"\b[A-Z][\w'-]+", question))
    return {w for w in re.findall(r"\b[A-Z][\w'-]{2,}", answer) if w not in asked and w not in _COMMON}


def key_facts(answer: str, question: str) -> set[str]:
    """What identifies a sub-answer: its numbers, else its capitalised names, that the sub-question does not state."""
    return _new_numbers(answer, question) or _new_names(answer, question)


_WHO = re.compile(r"^\W*(?:who|whom|whose)\b", re.I)


def states_answer(text: str, question: str) -> bool:
    """Whether `text` holds the kind of fact the question asks for: a name for "who", a number for a
    quantity or a date, the Yes or No of a yes/no question, else any name or number it did not hold."""
    if prompts.is_yes_no(question):
        return bool(_YES_NO.match(text))
    if _WHO.match(question):
        return bool(_new_names(text, question))
    if prompts.asks_for_number(question):
        return bool(_new_numbers(text, question))
    return bool(key_facts(text, question))


class FactWatch:
    """Follows an answer as it grows, judging each sentence end once: called at every piece, a
    rescan of the whole answer would cost more the longer it gets (about 11 ms at 2,000 characters)."""

    def __init__(self, question: str):
        self.question = question
        self._next = 0  # where the next sentence end is looked for: every head before it stated nothing
        self._kept_whole = False

    def end(self, text: str) -> int | None:
        """The end of the first complete sentences of `text` that state the fact asked for, or None while none has.

        Code, reasoning blocks and answers of several lines (lists) are never cut."""
        if self._kept_whole or "```" in text or "<think>" in text:
            return None
        for match in _SENTENCE_END.finditer(text, self._next):
            self._next = match.end()
            head = text[: match.end() - 1].rstrip()  # up to the punctuation (and its quote), not the space after
            if "\n" in head:
                self._kept_whole = True  # a list or lines of their own: every later head holds the line break too
                return None
            if len(head.split()) < MIN_WORDS or _ABBREVIATION.search(head):
                continue
            if states_answer(head, self.question):
                return len(head)
        return None
