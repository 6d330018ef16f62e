"""Reading JSONL / JSON datasets with complm_cli.evaluate.datasets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from complm_cli.evaluate.datasets import Example, read_dataset
from complm_cli.errors import DatasetError, ExitCode, UsageError
from complm_cli.evaluate.metrics import score

SAMPLE = Path(__file__).resolve().parent.parent / "complm_cli" / "data" / "sample.jsonl"


def write_jsonl(path: Path, records: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def dataset_error(path: Path, **kwargs: Any) -> str:
    with pytest.raises(DatasetError) as info:
        read_dataset(path, **kwargs)
    assert info.value.code == ExitCode.DATASET
    return info.value.message


def test_reads_a_good_file(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "d.jsonl",
        [
            {"id": "a", "question": "What is 2 + 2?", "answer": "4"},
            {"id": "b", "question": "Name a colour.", "answer": ["red", "blue"]},
        ],
    )
    assert read_dataset(path) == [
        Example(id="a", question="What is 2 + 2?", answers=["4"]),
        Example(id="b", question="Name a colour.", answers=["red", "blue"]),
    ]


def test_skips_blank_lines_and_crlf(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'\r\n{"question": "q1", "answer": "a1"}\r\n\r\n   \n{"question": "q2", "answer": "a2"}')
    examples = read_dataset(path)
    assert [e.question for e in examples] == ["q1", "q2"]
    assert [e.id for e in examples] == ["line-2", "line-5"]


def test_utf8_bom_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"question": "q", "answer": "a"}\n')
    assert read_dataset(path)[0].question == "q"


@pytest.mark.parametrize("name", ["question", "query", "input", "prompt", "problem"])
def test_question_aliases(tmp_path: Path, name: str) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{name: " Why? ", "answer": "because"}])
    assert read_dataset(path)[0].question == "Why?"


@pytest.mark.parametrize("name", ["answer", "answers", "gold", "ground_truth", "target", "label", "output"])
def test_answer_aliases(tmp_path: Path, name: str) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"question": "q", name: "x"}])
    assert read_dataset(path)[0].answers == ["x"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"text": ["Denver Broncos", "Broncos", "Denver Broncos"], "answer_start": [1, 2, 1]}, ["Denver Broncos", "Broncos"]),
        (True, ["yes"]),
        (False, ["no"]),
        (212, ["212"]),
        (212.0, ["212"]),
        (2.5, ["2.5"]),
        ([1, "one"], ["1", "one"]),
        ({"value": "Paris", "aliases": ["Paris, France"]}, ["Paris", "Paris, France"]),
        ("Janet sells 16 - 3 - 4 = 9 eggs.\n#### 18", ["18"]),
    ],
)
def test_answer_shapes(tmp_path: Path, value: Any, expected: list[str]) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"question": "q", "answers": value}])
    assert read_dataset(path)[0].answers == expected


@pytest.mark.parametrize("name", ["id", "qid", "_id", "task_id"])
def test_id_aliases(tmp_path: Path, name: str) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{name: 7, "question": "q", "answer": "a"}])
    assert read_dataset(path)[0].id == "7"


def test_explicit_fields_win_over_aliases(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"question": "wrong", "text": "right", "answer": "no", "final": "yes"}])
    example = read_dataset(path, question_field="text", answer_field="final")[0]
    assert (example.question, example.answers) == ("right", ["yes"])


def test_duplicate_ids_are_made_unique(tmp_path: Path) -> None:
    records = [{"id": i, "question": "q", "answer": "a"} for i in ["x", "x", "x-2", "x"]]
    path = write_jsonl(tmp_path / "d.jsonl", records)
    ids = [e.id for e in read_dataset(path)]
    assert ids[:2] == ["x", "x-2"]
    assert len(set(ids)) == 4


def test_unicode_line_separator_does_not_split_a_record(tmp_path: Path) -> None:
    question = "first part\u2028second part\u2029third\x85fourth"
    path = write_jsonl(tmp_path / "d.jsonl", [{"question": question, "answer": "a"}, {"question": "q2", "answer": "b"}])
    assert "\u2028" in path.read_text(encoding="utf-8")  # written raw, not escaped
    examples = read_dataset(path)
    assert len(examples) == 2
    assert examples[0].question == question


def test_limit(tmp_path: Path) -> None:
    records: list[Any] = [{"question": f"q{i}", "answer": "a"} for i in range(5)]
    path = write_jsonl(tmp_path / "d.jsonl", records + ["a bad line after the limit"])
    assert [e.question for e in read_dataset(path, limit=2)] == ["q0", "q1"]
    assert len(read_dataset(path, limit=5)) == 5
    with pytest.raises(UsageError):
        read_dataset(path, limit=0)


def test_json_array_file(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text(json.dumps([{"query": "q1", "target": "a"}, {"query": "q2", "target": "b"}], indent=2))
    examples = read_dataset(path, limit=1)
    assert examples == [Example(id="item-1", question="q1", answers=["a"])]


def test_missing_file(tmp_path: Path) -> None:
    message = dataset_error(tmp_path / "nope.jsonl")
    assert "nope.jsonl" in message and "does not exist" in message


def test_directory(tmp_path: Path) -> None:
    assert "is a directory" in dataset_error(tmp_path)


def test_not_json(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"question": "q", "answer": "a"}\n\n{"question": oops}\n')
    message = dataset_error(path)
    assert message.startswith(f"Line 3 of {path} is not valid JSON")


def test_not_json_in_array(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text('\n[\n  {"question": "q", "answer": "a"},\n  oops\n]\n')
    assert dataset_error(path).startswith(f"Line 4 of {path} is not valid JSON")


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"question": "q", "answer": "a"}\n{"question": "\xff", "answer": "a"}\n')
    assert dataset_error(path) == f"Line 2 of {path} is not UTF-8 text."


@pytest.mark.parametrize(("record", "kind"), [([1, 2], "a list"), ("text", "a string"), (3, "a number"), (None, "null")])
def test_not_an_object(tmp_path: Path, record: Any, kind: str) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"question": "q", "answer": "a"}, record])
    assert dataset_error(path) == f"Line 2 of {path} is {kind}, not a JSON object."


def test_no_question(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "q", "answer": "a"}])
    message = dataset_error(path)
    assert message.startswith(f"Line 1 of {path} has no question field")
    for name in ["question", "query", "input", "prompt", "problem", "--question-field"]:
        assert name in message


def test_no_question_with_explicit_field(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"question": "q", "answer": "a"}])
    assert "'text'" in dataset_error(path, question_field="text")


@pytest.mark.parametrize("question", ["", "   ", ["a", "b"], {"role": "user"}])
def test_bad_question_value(tmp_path: Path, question: Any) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"question": question, "answer": "a"}])
    assert dataset_error(path).startswith(f"Line 1 of {path} has ")


def test_no_answer(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"question": "q", "answer": "a"}, {"question": "q"}])
    message = dataset_error(path)
    assert message.startswith(f"Line 2 of {path} has no answer field")
    assert "--answer-field" in message


@pytest.mark.parametrize("answer", ["", "  ", [], {"text": []}, None, {"unknown": 1}])
def test_empty_answer(tmp_path: Path, answer: Any) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"question": "q", "answers": answer}])
    assert dataset_error(path).startswith(f"Line 1 of {path} has no ")


@pytest.mark.parametrize("content", ["", "\n\n  \n", "[]"])
def test_empty_file(tmp_path: Path, content: str) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(content)
    assert dataset_error(path) == f"Dataset file {path} has no examples."


def test_errors_are_one_sentence(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "q"}])
    message = dataset_error(path)
    assert message.endswith(".") and "\n" not in message


def test_sample_dataset() -> None:
    examples = read_dataset(SAMPLE)
    assert len(examples) == 30
    assert len({e.id for e in examples}) == 30
    with SAMPLE.open(encoding="utf-8") as f:
        records = [json.loads(line) for line in f if line.strip()]
    shapes = [r["shape"] for r in records]
    assert shapes.count("fanout") == 12 and shapes.count("chain") == 12 and shapes.count("single") == 6
    assert {r["domain"] for r in records} == {"code", "general", "arithmetic", "comparison"}
    for example in examples:
        # every gold must score as correct against itself
        assert score(example.answers[0], example.answers)["correct"] == 1.0


@pytest.mark.parametrize("text", [
    '{"question": "q", "answer": ' + "[" * 100_000 + "]" * 100_000 + "}\n",  # deeper than json can parse
    '{"question": "q", "answer": ' + "[" * 900 + '"a"' + "]" * 900 + "}\n",  # parses, deeper than the answer walk
    "[" * 100_000 + "\n",  # a JSON array file
], ids=["too-deep-to-parse", "too-deep-to-walk", "array-file"])
def test_deeply_nested_json_is_a_dataset_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "deep.jsonl"
    path.write_text(text)
    with pytest.raises(DatasetError) as info:
        read_dataset(path)
    assert info.value.code == ExitCode.DATASET and str(path) in info.value.message


def test_deeply_nested_dataset_exits_9(tmp_path: Path, isolated) -> None:
    from typer.testing import CliRunner

    from complm_cli.cli.app import app

    path = tmp_path / "deep.jsonl"
    path.write_text('{"question": "q", "answer": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    result = CliRunner().invoke(app, ["eval", str(path)])
    assert result.exit_code == 9, result.output
    assert "Traceback" not in result.output


def test_sample_set_is_shipped_and_readable() -> None:
    from complm_cli.evaluate.run import sample_path

    examples = read_dataset(sample_path())
    assert 25 <= len(examples) <= 40
    assert all(ex.question and ex.answers for ex in examples)
