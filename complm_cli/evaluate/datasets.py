"""Reading evaluation datasets: JSONL (one object a line) or one JSON array."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from complm_cli.errors import DatasetError, UsageError

QUESTION_FIELDS = ("question", "query", "input", "prompt", "problem")
ANSWER_FIELDS = ("answer", "answers", "gold", "ground_truth", "target", "label", "output")
ID_FIELDS = ("id", "qid", "_id", "task_id")


@dataclass
class Example:
    id: str
    question: str
    answers: list[str]  # accepted gold strings, never empty


def _answer_strings(value: Any) -> list[str]:
    """Every accepted gold string in an answer value, in order, without repeats."""
    if isinstance(value, bool):  # before int: bool is an int subclass
        found = ["yes" if value else "no"]
    elif isinstance(value, int):
        found = [str(value)]
    elif isinstance(value, float):
        found = [str(int(value)) if value.is_integer() else str(value)]
    elif isinstance(value, str):
        # GSM8K puts the worked solution first and the final answer after "####".
        text = value.rsplit("####", 1)[-1] if "\n####" in value else value
        found = [text.strip()] if text.strip() else []
    elif isinstance(value, list):
        found = [s for item in value for s in _answer_strings(item)]
    elif isinstance(value, dict):
        # SQuAD {"text": [...]}, TriviaQA {"value": ..., "aliases": [...]}
        found = [s for key in ("text", "value", "aliases") for s in _answer_strings(value.get(key))]
    else:
        found = []
    return list(dict.fromkeys(found))


def _records(path: Path) -> Iterator[tuple[str, Any]]:
    """(where, value) for each record: where is "line N" or "item N", 1-based."""
    try:
        f = path.open("rb")
    except FileNotFoundError:
        raise DatasetError(f"Dataset file {path} does not exist.") from None
    except IsADirectoryError:
        raise DatasetError(f"Dataset path {path} is a directory, not a JSONL or JSON file.") from None
    except OSError as exc:
        raise DatasetError(f"Dataset file {path} cannot be read ({exc.strerror}).") from None
    with f:
        first = True
        # Binary lines split only on b"\n", never inside a string holding U+2028.
        for number, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8").strip()
            except UnicodeDecodeError:
                raise DatasetError(f"Line {number} of {path} is not UTF-8 text.") from None
            if not line:
                continue
            if first and line.startswith("["):
                yield from _array_records(path, number, line.encode() + b"\n" + f.read())
                return
            first = False
            try:
                yield f"line {number}", json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(f"Line {number} of {path} is not valid JSON ({exc.msg}).") from None
            except RecursionError:
                raise DatasetError(_too_deep(f"Line {number} of {path}")) from None


def _array_records(path: Path, first_line: int, data: bytes) -> Iterator[tuple[str, Any]]:
    try:
        value = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise DatasetError(f"Dataset file {path} is not UTF-8 text.") from None
    except json.JSONDecodeError as exc:
        line = first_line + exc.lineno - 1
        raise DatasetError(f"Line {line} of {path} is not valid JSON ({exc.msg}).") from None
    except RecursionError:
        raise DatasetError(_too_deep(f"Dataset file {path}")) from None
    for number, item in enumerate(value, start=1):
        yield f"item {number}", item


def _too_deep(place: str) -> str:
    return f"{place} nests its JSON too deeply to read; a record is an object of a question and an answer."


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


def _pick(record: dict, given: str | None, aliases: tuple[str, ...]) -> tuple[str, Any] | None:
    """The (name, value) of the given field, or of the first alias present."""
    for name in (given,) if given else aliases:
        if name in record and record[name] is not None:
            return name, record[name]
    return None


def _field(record: dict, chosen: str | None, known: tuple[str, ...], place: str, what: str) -> tuple[str, Any]:
    """(name, value) of the record's question or answer field: the one --question-field/--answer-field names, else a known one."""
    found = _pick(record, chosen, known)
    if found is not None:
        return found
    if chosen:
        raise DatasetError(f"{place} has no {chosen!r} field (the one --{what}-field names).")
    raise DatasetError(f"{place} has no {what} field (tried {', '.join(known)}); pass --{what}-field to pick one.")


def _example(path: Path, where: str, record: Any, question_field: str | None, answer_field: str | None) -> Example:
    place = f"{where.capitalize()} of {path}"
    if not isinstance(record, dict):
        raise DatasetError(f"{place} is {_kind(record)}, not a JSON object.")

    name, text = _field(record, question_field, QUESTION_FIELDS, place, "question")
    if not isinstance(text, str):
        raise DatasetError(f"{place} has {_kind(text)} in its {name!r} field where the question text should be.")
    if not text.strip():
        raise DatasetError(f"{place} has an empty question in its {name!r} field.")

    name, value = _field(record, answer_field, ANSWER_FIELDS, place, "answer")
    answers = _answer_strings(value)
    if not answers:
        raise DatasetError(f"{place} has no usable answer in its {name!r} field.")

    found = _pick(record, None, ID_FIELDS)
    ident = str(found[1]).strip() if found else ""
    return Example(id=ident or where.replace(" ", "-"), question=text.strip(), answers=answers)


def read_dataset(
    path: Path,
    question_field: str | None = None,
    answer_field: str | None = None,
    limit: int | None = None,
) -> list[Example]:
    """The examples in a JSONL file (or a JSON array), at most `limit` of them."""
    path = Path(path)
    if limit is not None and limit < 1:
        raise UsageError("--limit must be a positive whole number.")
    examples: list[Example] = []
    seen: set[str] = set()
    for where, record in _records(path):
        try:
            example = _example(path, where, record, question_field, answer_field)
        except RecursionError:
            raise DatasetError(_too_deep(f"{where.capitalize()} of {path}")) from None
        # Duplicate ids are kept, made unique so results can be keyed by id.
        base, n = example.id, 1
        while example.id in seen:
            n += 1
            example.id = f"{base}-{n}"
        seen.add(example.id)
        examples.append(example)
        if limit is not None and len(examples) >= limit:
            break  # later lines are not even read
    if not examples:
        raise DatasetError(f"Dataset file {path} has no examples.")
    return examples
