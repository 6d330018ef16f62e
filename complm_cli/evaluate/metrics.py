"""SQuAD-style answer scoring, tuned for sentence-long LLM answers.

Besides exact match and token F1, `score` reports `contains` (the gold appears
as whole words inside the answer) and a `correct` verdict that understands
yes/no and multiple-choice golds.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable
from decimal import Decimal, InvalidOperation

from complm_cli.numbers import TENS, UNITS

Gold = str | list[str]

_ARTICLES = frozenset({"a", "an", "the"})
# Deleted rather than turned into a space, so "don't" == "dont".
_APOSTROPHES = frozenset("'\u2019\u02bc`")

# A number with optional sign, thousands commas ("1,000") and decimals ("212.0").
# Runs of digits with other separators ("3.10.4", "1,2,3") are left to the
# punctuation pass, which splits them into separate number tokens. A number
# glued to a letter ("0a", "5km") is left whole, as it is when an underscore
# precedes it, so normalize() gives the same tokens when run again.
_NUMBER = re.compile(
    r"(?<![\w.,])[-\u2212]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?![^\W_]|[.,]\d)"
)

# Unit words dropped from a numeric gold, so gold "212°F" accepts "212 degrees".
_UNIT_WORDS = frozenset({
    "f", "c", "k", "degree", "degrees", "fahrenheit", "celsius", "kelvin",
    "percent", "per", "cent", "km", "m", "cm", "mm", "kg", "g", "mg", "mph",
    "s", "sec", "seconds", "min", "minutes", "h", "hours", "years", "year",
    "days", "day", "usd", "dollars", "eur", "euros",
})

_YES = {"yes": "yes", "true": "yes", "no": "no", "false": "no"}
_YESNO_WORD = re.compile(r"\b(yes|no|true|false)\b", re.IGNORECASE)
_YESNO_ANSWER = re.compile(
    r"\banswer\s*(?:is|:)?\s*[:\-]?\s*\W{0,3}(yes|no|true|false)\b", re.IGNORECASE
)

_LETTER_ALONE = re.compile(r"\W*([A-Ja-j])\W*")
_LETTER_AFTER_KEYWORD = re.compile(
    r"(?i:\b(?:answer|option|choice)\b)(?:\s+(?i:is))?\s*[:\-]?\s*\**\s*"
    r"(?:[(\[]([A-Ja-j])[)\]]|([A-J])\b(?!'))"
)
_LETTER_LEADING = re.compile(r"^\W*[(\[]?([A-J])[)\].:]")
_LETTER_BRACKETED = re.compile(r"[(\[]([A-J])[)\]]")
# "A" and "I" are too often ordinary words to count as a bare letter.
_LETTER_BARE = re.compile(r"\b([B-HJ])\b(?!')")


def _canonical_number(text: str) -> str:
    text = text.replace(",", "").replace("\u2212", "-")
    try:
        value = Decimal(text)
    except InvalidOperation:
        return text
    out = format(value.normalize(), "f")
    return "0" if out in ("-0", "0") else out


def _strip_punctuation(text: str) -> str:
    out = []
    for ch in text:
        if ch in _APOSTROPHES or unicodedata.category(ch) == "Mn":  # combining accents: "Gödel" == "Godel"
            continue
        # Anything else that is no letter or digit separates words: punctuation and symbols, but also
        # control characters, which left "0" glued to an escape after ".0\x1b" until a second pass.
        out.append(ch if ch.isalnum() else " ")
    return "".join(out)


def _words_to_numbers(tokens: list[str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token in TENS:
            value = TENS[token]
            nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
            if nxt in UNITS and 0 < UNITS[nxt] < 10:
                value += UNITS[nxt]
                i += 1
            out.append(str(value))
        elif token in UNITS:
            out.append(str(UNITS[token]))
        else:
            out.append(token)
        i += 1
    return out


def _tokens(text: str) -> list[str]:
    text = unicodedata.normalize("NFKD", unicodedata.normalize("NFKC", text).lower())
    parts: list[str] = []
    pos = 0
    # Numbers are cut out first so their "." "," "-" survive the punctuation
    # pass, and so "212°F" splits into "212" and "f".
    for match in _NUMBER.finditer(text):
        parts.append(_strip_punctuation(text[pos : match.start()]))
        parts.append(f" {_canonical_number(match.group())} ")
        pos = match.end()
    parts.append(_strip_punctuation(text[pos:]))
    words = _words_to_numbers("".join(parts).split())
    # Digits the number pattern skipped (".00" after its "." is stripped) are
    # canonicalized too, so normalize() stays idempotent.
    return [_canonical_number(w) if w.isdigit() else w for w in words if w not in _ARTICLES]


def normalize(text: str) -> str:
    """Lower case, drop punctuation and articles, canonicalize numbers, collapse spaces."""
    return " ".join(_tokens(text))


def _golds(gold: Gold) -> list[str]:
    golds = [gold] if isinstance(gold, str) else list(gold)
    if not golds:
        raise ValueError("at least one gold answer is needed")
    return golds


def best_of(metric: Callable[[str, str], float], prediction: str, gold: Gold) -> float:
    """The best `metric(prediction, g)` over the accepted golds."""
    return max(metric(prediction, g) for g in _golds(gold))


def _exact(prediction: str, gold: str) -> float:
    return float(normalize(prediction) == normalize(gold))


def _f1(prediction: str, gold: str) -> float:
    pred, ref = _tokens(prediction), _tokens(gold)
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def _numeric_core(gold_tokens: list[str]) -> list[str]:
    """A numeric gold without its unit words ("212 f" -> "212")."""
    if gold_tokens and _NUMBER.fullmatch(gold_tokens[0]):
        core = [t for t in gold_tokens if t not in _UNIT_WORDS]
        if len(core) == 1:
            return core
    return gold_tokens


def _contains(prediction: str, gold: str) -> float:
    pred, ref = normalize(prediction), normalize(gold)
    if not ref:
        return float(not pred)
    candidates = {ref, " ".join(_numeric_core(ref.split()))}
    return float(any(f" {c} " in f" {pred} " for c in candidates))


def exact_match(prediction: str, gold: Gold) -> float:
    return best_of(_exact, prediction, gold)


def token_f1(prediction: str, gold: Gold) -> float:
    return best_of(_f1, prediction, gold)


def contains(prediction: str, gold: Gold) -> float:
    return best_of(_contains, prediction, gold)


def yes_no(prediction: str) -> str | None:
    """"yes", "no" or None: a leading verdict wins, then "the answer is X", then the first one."""
    words = normalize(prediction).split()
    if words and words[0] in _YES:
        return _YES[words[0]]
    for pattern in (_YESNO_ANSWER, _YESNO_WORD):
        match = pattern.search(prediction)
        if match:
            return _YES[match.group(1).lower()]
    return None


def choice_letter(prediction: str) -> str | None:
    """The multiple-choice letter A-J an answer picks, or None."""
    text = prediction.strip()
    match = _LETTER_ALONE.fullmatch(text)
    if match:
        return match.group(1).upper()
    for pattern in (_LETTER_AFTER_KEYWORD, _LETTER_LEADING, _LETTER_BRACKETED, _LETTER_BARE):
        match = pattern.search(text)
        if match:
            return next(g for g in match.groups() if g).upper()
    return None


def _gold_letter(gold: str) -> str | None:
    match = _LETTER_ALONE.fullmatch(gold.strip())
    return match.group(1).upper() if match else None


def _without_echo(prediction: str, question: str, n: int = 3) -> str:
    """The prediction less the phrases it copies from the question.

    Answers often restate the question ("the tuple (4, 5, 6, 7) has 6
    elements"), so a gold of 7 would be 'contained' in a wrong answer. Words
    covered by a run of `n` words that also occurs in the question are dropped."""
    pred, ques = normalize(prediction).split(), normalize(question).split()
    grams = {tuple(ques[i : i + n]) for i in range(len(ques) - n + 1)}
    echoed = [False] * len(pred)
    for i in range(len(pred) - n + 1):
        if tuple(pred[i : i + n]) in grams:
            echoed[i : i + n] = [True] * n
    return " ".join(t for t, e in zip(pred, echoed) if not e)


def score(prediction: str, gold: Gold, question: str | None = None) -> dict:
    """em, f1, contains, kind ("yesno" | "choice" | "text") and correct, for one answer.

    With `question`, `contains` ignores what the prediction copies from the question."""
    golds = _golds(gold)
    row: dict = {
        "em": exact_match(prediction, golds),
        "f1": token_f1(prediction, golds),
        "contains": contains(_without_echo(prediction, question) if question else prediction, golds),
    }
    verdicts = [_YES.get(normalize(g)) for g in golds]
    letters = [_gold_letter(g) for g in golds]
    if all(verdicts):
        row["kind"] = "yesno"
        row["correct"] = float(yes_no(prediction) in verdicts)
    elif all(letters):
        row["kind"] = "choice"
        row["correct"] = float(choice_letter(prediction) in letters)
    else:
        row["kind"] = "text"
        row["correct"] = max(row["em"], row["contains"])
    return row


def summarize(rows: Iterable[dict]) -> dict:
    """Means of em, f1, contains and correct over score rows, plus their count."""
    rows = list(rows)
    keys = ("em", "f1", "contains", "correct")
    if not rows:
        return {"count": 0, **{k: 0.0 for k in keys}}
    return {"count": len(rows), **{k: sum(float(r.get(k, 0.0)) for r in rows) / len(rows) for k in keys}}
