"""Files to passages (complm_cli/corpus/read.py): what is read, what is skipped, where each passage came from."""

import json
import os

import pytest

from complm_cli.corpus.read import MAX_WORDS, decode, find_files, passages
from complm_cli.errors import DatasetError, UsageError
from tests.conftest import NOTES


def test_a_folder_gives_its_text_files_recursively_and_counts_what_it_skips(tmp_path):
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    (tmp_path / "a.md").write_text("# A\n\ntext")
    (tmp_path / "sub" / "b.txt").write_text("text")
    (tmp_path / "sub" / "deeper" / "c.jsonl").write_text('{"text": "x"}\n')
    (tmp_path / ".hidden.md").write_text("secret")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "notes.md").write_text("inside a hidden folder")
    (tmp_path / "paper.pdf").write_bytes(b"%PDF-1.4")
    os.mkfifo(tmp_path / "pipe.txt")  # read, it would block forever
    found = find_files([tmp_path])
    assert sorted(f.path.name for f in found.files) == ["a.md", "b.txt", "c.jsonl"]
    assert found.skipped == {"hidden": 2, "other type": 1, "not a regular file": 1}


def test_a_file_named_twice_is_read_once(tmp_path):
    (tmp_path / "a.txt").write_text("text")
    found = find_files([tmp_path, tmp_path / "a.txt", tmp_path / "." / "a.txt"])
    assert [f.path.name for f in found.files] == ["a.txt"]


def test_a_path_that_does_not_exist_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        find_files([tmp_path / "nope"])


def test_markdown_headings_title_passages_and_lines_are_kept():
    path = NOTES / "libraries.md"
    got = list(passages(path, path.read_text()))
    titles = [p.title for p in got]
    assert titles == ["Parsing libraries compared", "Quillfeather", "Brindlewood"]
    quill = got[1]
    lines = path.read_text().splitlines()
    assert "2013" in quill.text and "Maren Okafor" in quill.text
    assert lines[quill.start_line - 1].startswith("Quillfeather is") and "40 megabytes" in lines[quill.end_line - 1]


def test_long_text_is_split_on_paragraph_boundaries_within_the_word_limit(tmp_path):
    paragraphs = [" ".join(f"p{i}w{j}" for j in range(70)) for i in range(6)]  # 420 words in all
    text = "\n\n".join(paragraphs)
    got = list(passages(tmp_path / "long.txt", text))
    assert all(len(p.text.split()) <= MAX_WORDS for p in got)
    assert " ".join(p.text for p in got) == " ".join(paragraphs)  # nothing lost, nothing repeated
    for p in got:  # a passage starts where a paragraph starts
        assert p.text.split()[0].endswith("w0")
    assert got[0].title == "long" and got[0].start_line == 1 and got[1].start_line == 5


def test_one_paragraph_longer_than_the_limit_is_cut_into_pieces(tmp_path):
    text = " ".join(f"w{j}" for j in range(MAX_WORDS * 2 + 5))
    got = list(passages(tmp_path / "one.txt", text))
    assert [len(p.text.split()) for p in got] == [MAX_WORDS, MAX_WORDS, 5]


def test_jsonl_keeps_id_and_title_and_names_a_line_without_text(tmp_path):
    path = NOTES / "papers" / "summaries.jsonl"
    got = list(passages(path, path.read_text()))
    assert [(p.record_id, p.title) for p in got] == [("vell-09", "The Vellichor protocol"), ("orrin-14", "Orrin codes")]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"text": "fine"}) + "\n" + json.dumps({"title": "no text"}) + "\n")
    with pytest.raises(DatasetError, match=r"bad.jsonl, line 2: no \"text\""):
        list(passages(bad, bad.read_text()))
    bad.write_text("{not json\n")
    with pytest.raises(DatasetError, match="line 1: not a JSON object"):
        list(passages(bad, bad.read_text()))


def test_binary_bytes_are_not_text():
    assert decode(b"\x89PNG\r\n\x1a\n\x00\x00") is None
    assert decode("caf\u00e9".encode("latin-1")) is None
    assert decode("\ufeffcaf\u00e9".encode("utf-8")) == "caf\u00e9"
