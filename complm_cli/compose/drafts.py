"""Guesses of the planner's next words, for the engine to check (prompt-lookup decoding).

A plan copies the question's own words: "Who painted the Mona Lisa, and
what is the chemical symbol of gold?" becomes

    painter = ask("Who painted the Mona Lisa?")
    symbol = ask("What is the chemical symbol of gold?")

A drafter guesses the words that follow from the question; the engine checks
the whole guess in one step and keeps only the tokens the model would have
written itself (experts/engine.py), so a wrong guess costs time, never
words. Only the planner guesses. The same phrase guesses were tried on the
steps that build on earlier answers and on the aggregation, which copy
names from those answers: chains and comparisons ran 1.01x to 1.02x faster
(bench/drafts.py), nothing worth a second code path. A direct
answer is never guessed, so `--mode monolithic` and composition are compared
on equal terms.
"""

from __future__ import annotations

import re

_ASKING = r"(?:who|whom|whose|what|where|when|why|how)\b"
_WH = r"(?:who|whom|whose|what|which|where|when|why|how|is|are|was|were|do|does|did|can|could|has|have|had|will|would)\b"
# Where one question of a list ends and the next begins: "?", ";", ". ", ", and which ...", ", how ...".
# A bare ", which" or ", was" is most often a relative clause of a statement ("a DVD, which cost him").
_CLAUSE_END = re.compile(rf"\s*(?:[?;]+|\.\s+|,?\s+and\s+(?={_WH})|,\s+(?={_ASKING}))\s*", re.I)
# A line that has reached its ask call: `name = ask` and whatever of the string is written;
# or only `name =`, where a list of questions most likely goes on with an ask.
_ASK = re.compile(r'^\s*[A-Za-z_]\w*\s*=(\s*ask)?(?:\((\s*f?"((?:[^"\\]|\\.)*))?)?$')
_ASKED = re.compile(r'ask\(\s*f?"((?:[^"\\]|\\.)*)"')
MIN_MATCH = 8  # characters of the model's own words that must be found in the question before its words are guessed
FIRST_WORDS = 2  # words guessed at first; doubled each time the model keeps them all
MAX_WORDS = 16


def clauses(question: str) -> list[tuple[int, int]]:
    """(start, end) of each clause of the question, in order."""
    spans, start = [], 0
    for m in _CLAUSE_END.finditer(question):
        if m.start() > start:
            spans.append((start, m.start()))
        start = m.end()
    if start < len(question.rstrip(" ?.!")):
        spans.append((start, len(question.rstrip(" ?.!"))))
    return spans


def _norm(text: str) -> str:
    return " ".join(text.lower().rstrip(" ?.").split())


class PlanDraft:
    """The planner's guesses: a question's clauses as ask lines, besides its copied words.

    - At `name =` (or `name = ask`) in a list of two or more questions: the next
      question not yet asked, as a whole line. Names and formulas are never
      guessed; the model writes them token by token.
    - Once the model has begun a clause as the question words it: the rest of
      that clause and of its line. A question of one clause is guessed so only on
      the first line (a simple question copied whole): a later line that starts
      like the question puts a reference where the question's words were.
    - Otherwise, once the model's own last words (at least MIN_MATCH characters,
      from a word boundary) are found in the question, the question's next
      words, to the end of the clause: two at first, twice as many each time the
      model keeps them all, two again after a miss (a rephrased step follows the
      question for a name or a phrase, then leaves it). A word is completed only
      where it is a name: "director" may be the whole word, not the start of
      "directors". Never inside a {reference}.
    """

    def __init__(self, question: str):
        self.question, self.lower = question, question.lower()
        self.words = FIRST_WORDS
        self._last: tuple[str, str] | None = None  # (text, guess) of the last phrase guess
        self.spans = clauses(question)
        # The clauses that are questions: they start as one, in a sentence that ends with "?"
        # ("When it reaches the top, he sees ..." is a statement).
        self.asks = [(a, b) for a, b in self.spans
                     if re.match(_WH, question[a:b], re.I) and re.match(r"[^.!?]*\?", question[b:])]

    def _unused(self, text: str) -> list[tuple[int, int]]:
        asked = {_norm(q) for q in _ASKED.findall(text)}
        return [(a, b) for a, b in self.spans if _norm(self.question[a:b]) not in asked]

    def _end(self, start: int) -> int:
        return next((b for a, b in self.spans if a <= start < b), start)

    def _close(self, end: int, unused: list[tuple[int, int]]) -> str:
        """What closes the line after the clause ending at `end`: a newline too while other questions wait."""
        others = [s for s in unused if s[1] != end and s in self.asks]
        return '?")' + ("\n" if others else "")

    def __call__(self, text: str) -> str:
        line = text[text.rfind("\n") + 1:]
        m = _ASK.match(line)
        if not m:
            return ""
        called, opened, typed = m.group(1), m.group(2), m.group(3)
        done = text[: len(text) - len(line)]
        unused = self._unused(done)
        if opened is None:  # `name =` or `name = ask`
            # Only a list of questions: a chain's first step rarely starts as the question does, and
            # the statements of a word problem ("Tom buys 3 notebooks.") are not asked as they stand.
            waiting = [s for s in unused if s in self.asks] if len(self.asks) >= 2 else []
            if not waiting:
                return ""  # or every question is asked: what follows is a formula, if anything
            a, b = waiting[0]
            clause = self.question[a:b]
            return (" ask" if called is None else "") + '("' + clause[:1].upper() + clause[1:] + self._close(b, unused)
        if "{" in typed[typed.rfind("}") + 1:]:
            return ""  # inside a reference to an earlier step: a name the question does not hold
        low = typed.lower()
        if len(low.split()) >= (1 if len(self.spans) > 1 else 2) and (len(self.spans) > 1 or not done.strip()):
            for a, b in unused:  # the model began a clause as the question words it
                clause = self.lower[a:b]
                if clause.startswith(low) and len(low) < len(clause):
                    return self.question[a + len(typed):b] + self._close(b, unused)
        return self._phrase(text, typed, unused)

    def _phrase(self, text: str, typed: str, unused: list[tuple[int, int]]) -> str:
        """The question's words after the model's own last words (see the class)."""
        if self._last is not None:
            before, guess = self._last
            self.words = min(MAX_WORDS, self.words * 2) if text.startswith(before + guess) else FIRST_WORDS
            self._last = None
        low = typed.lower()
        for size in range(len(low), MIN_MATCH - 1, -1):
            if size < len(low) and low[-size - 1].isalnum() and low[-size].isalnum():
                continue  # the match must start at a word boundary of the model's words
            at = self.lower.rfind(low[-size:])
            if at < 0 or (at > 0 and self.lower[at - 1].isalnum() and low[-size].isalnum()):
                continue
            start = at + size
            end = self._end(start)
            if end <= start:
                return ""
            rest = self.question[start:end]
            mid_word = rest[:1].isalnum()
            if mid_word:
                word = self.question[self.question.rfind(" ", 0, start) + 1:]
                if not word[:1].isupper() and not word[:1].isdigit():
                    return ""
            words = re.findall(r"\s*\S+", rest)  # each word with the spaces before it
            cut = "".join(words[: self.words + mid_word])
            guess = cut + (self._close(end, unused) if len(cut) >= len(rest) else "")
            self._last = (text, guess)
            return guess
        return ""
