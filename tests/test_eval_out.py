"""`complm eval --out`: the results file survives a kill mid-line, and an unwritable one is refused up front."""

import json

from typer.testing import CliRunner

from complm_cli.cli.app import app
from complm_cli.errors import ExitCode
from complm_cli.evaluate.run import _append, read_done

ROW = {"id": "q1", "mode": "parallel", "scores": {"correct": True}}


def test_append_after_a_half_written_line_drops_that_line(tmp_path):
    out = tmp_path / "run.jsonl"
    good = json.dumps({"id": "q0", "mode": "parallel"}) + "\n"
    out.write_text(good + '{"id": "q1", "mode": "sequen')  # what a kill mid-write leaves
    assert read_done(out) == [json.loads(good)]
    _append(out, ROW)
    lines = out.read_text().splitlines()
    assert [json.loads(line) for line in lines] == [json.loads(good), ROW]


def test_a_last_line_without_its_newline_is_not_counted_as_done(tmp_path):
    out = tmp_path / "run.jsonl"
    out.write_text(json.dumps(ROW))  # whole JSON, but the newline never made it
    assert read_done(out) == []
    _append(out, ROW)
    assert out.read_text() == json.dumps(ROW, ensure_ascii=False) + "\n"


def test_append_to_a_long_cut_line_and_to_an_empty_file(tmp_path):
    out = tmp_path / "run.jsonl"
    out.write_text("x" * 200_000)
    _append(out, ROW)
    assert [json.loads(line) for line in out.read_text().splitlines()] == [ROW]
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    _append(empty, ROW)
    assert read_done(empty) == [ROW]


def test_a_results_file_that_is_not_utf8_is_redone_not_a_crash(tmp_path):
    out = tmp_path / "run.jsonl"
    out.write_bytes(b"\xff\xfe\n" + (json.dumps(ROW) + "\n").encode())
    assert read_done(out) == [ROW]


def test_unwritable_out_is_refused_before_the_first_question(tmp_path, isolated):
    data = tmp_path / "qa.jsonl"
    data.write_text(json.dumps({"question": "What is 2 plus 2?", "answer": "4"}) + "\n")
    (tmp_path / "afile").write_text("")
    out = tmp_path / "afile" / "run.jsonl"  # a folder that is a file: no model is needed to find that out
    result = CliRunner().invoke(app, ["eval", str(data), "--out", str(out), "--offline"])
    assert result.exit_code == ExitCode.STORAGE, result.output
    assert str(out.parent) in result.stderr and "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1
