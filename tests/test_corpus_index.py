"""`complm corpus add|list|rm` and the index under them, with the real embedder: incremental, killed, concurrent,
bad input. Each test's corpora live in its own cache folder (COMPLM_CACHE_DIR, set by conftest)."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from complm_cli.cli.app import app
from complm_cli.compose.knowledge import embedder_id
from complm_cli.corpus import build, index
from complm_cli.corpus.search import Searcher
from tests.conftest import ROOT, TINY_CATALOG

pytestmark = pytest.mark.model

runner = CliRunner()


def cli(*args):
    return runner.invoke(app, [*args])


def emb_id() -> str:
    from complm_cli.cache.catalog import load_catalog

    return embedder_id(load_catalog([TINY_CATALOG]))


def add(cache: Path, paths, embedder, name="notes", **kw) -> build.Report:
    return build.add(cache, name, [Path(p) for p in paths], embedder, emb_id(), **kw)


def search(cache: Path, embedder, text: str, name="notes", k=3):
    s = Searcher(cache, name, emb_id())
    try:
        return s.search(text, embedder.encode([text])[0], k)
    finally:
        s.close()


def generation(cache: Path, name="notes") -> int:
    with sqlite3.connect(index.folder(cache, name) / index.DB) as con:
        return int(dict(con.execute("SELECT key, value FROM meta"))["generation"])


def one_line_error(result, code: int, words: str) -> None:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    assert result.stderr.count("\n") == 1 and words in result.stderr, result.stderr


# --- the commands ----------------------------------------------------------------------------------------------


def test_add_list_rm_as_a_user_runs_them(models, notes):
    result = cli("corpus", "add", "mynotes", str(notes), "--catalog", str(TINY_CATALOG))
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("mynotes: 3 files indexed (6 passages), 0 unchanged;")
    assert "6 passages in all" in result.stdout

    listed = cli("corpus", "list", "--json")
    [row] = json.loads(listed.stdout)
    assert row["name"] == "mynotes" and row["passages"] == 6 and row["files"] == 3
    assert row["embedder"] == "all-minilm-l6-v2" and row["size"] > 0 and row["updated"].endswith("Z")
    table = cli("corpus", "list").stdout
    assert "mynotes" in table and "all-minilm-l6-v2" in table

    again = cli("corpus", "add", "mynotes", str(notes), "--json", "--catalog", str(TINY_CATALOG))
    report = json.loads(again.stdout)
    assert report["files_indexed"] == 0 and report["files_unchanged"] == 3 and report["passages"] == 6

    assert "mynotes: ok (6 passages)" in cli("verify").stdout.replace("corpus ", "")
    assert cli("corpus", "rm", "mynotes").stdout.strip() == "Removed corpus mynotes."
    assert json.loads(cli("corpus", "list", "--json").stdout) == []
    one_line_error(cli("corpus", "rm", "mynotes"), 4, "No corpus named 'mynotes'")


def test_skipped_files_are_counted_in_the_summary(models, notes):
    (notes / ".draft.md").write_text("hidden")
    (notes / "figure.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00")
    (notes / "scan.txt").write_bytes(b"\x00\x01\x02binary")
    result = cli("corpus", "add", "n", str(notes), "--json", "--catalog", str(TINY_CATALOG))
    report = json.loads(result.stdout)
    assert report["skipped"] == {"hidden": 1, "other type": 1, "binary": 1}
    assert report["files_indexed"] == 3


# --- incremental -----------------------------------------------------------------------------------------------


def test_only_new_or_changed_files_are_read_again(isolated, pulled_models, embedder, notes):
    cache = isolated["cache"]
    first = add(cache, [notes], embedder)
    assert (first.indexed, first.added, first.passages) == (3, 6, 6)
    g = generation(cache)

    os.utime(notes / "rivers.txt")  # a new time, the same bytes: not embedded again, no new generation
    again = add(cache, [notes], embedder)
    assert (again.indexed, again.unchanged, again.added) == (0, 3, 0) and generation(cache) == g

    (notes / "rivers.txt").write_text("The Zorblat River is 530 kilometres long since the survey of 2024.\n")
    (notes / "new.md").write_text("# Harrow bridge\n\nThe Harrow bridge over the Zorblat opened in 1931.\n")
    changed = add(cache, [notes], embedder)
    assert (changed.indexed, changed.unchanged, changed.added) == (2, 2, 2)
    assert changed.passages == 7  # rivers.txt's one passage replaced, new.md's added
    assert generation(cache) == g + 1
    hits = search(cache, embedder, "How long is the Zorblat River?")
    assert "530 kilometres" in hits[0].text
    assert not any("412" in h.text for h in search(cache, embedder, "Zorblat 412 kilometres Kessan", k=6))

    (notes / "new.md").unlink()  # gone from a folder given again: its passages go too
    removed = add(cache, [notes], embedder)
    assert removed.removed == 1 and removed.passages == 6
    assert index.verify(cache, "notes") == (True, "ok (6 passages)")

    add(cache, [notes / "rivers.txt"], embedder)  # a file given alone does not drop the folder's others
    assert index.info(cache, "notes").passages == 6


def test_a_missing_vector_file_is_rebuilt_from_the_database(isolated, pulled_models, embedder, notes):
    cache = isolated["cache"]
    add(cache, [notes], embedder)
    index.vectors_path(index.folder(cache, "notes"), generation(cache)).unlink()
    ok, why = index.verify(cache, "notes")
    assert not ok and "missing or out of step" in why
    assert search(cache, embedder, "Who designed the Vellichor protocol?")[0].record_id == "vell-09"  # rebuilt in memory
    add(cache, [notes], embedder)  # nothing changed, but the file is written again
    assert index.verify(cache, "notes")[0]


def test_a_searcher_opened_before_an_add_keeps_working(isolated, pulled_models, embedder, notes):
    cache = isolated["cache"]
    add(cache, [notes], embedder)
    reader = Searcher(cache, "notes", emb_id())
    try:
        (notes / "libraries.md").write_text("# Quillfeather\n\nQuillfeather moved to the Apache license in 2020.\n")
        add(cache, [notes], embedder)
        q = "When was Quillfeather first released?"
        hits = reader.search(q, embedder.encode([q])[0], 3)  # its generation's file is still there
        assert hits and all(h.text for h in hits)
    finally:
        reader.close()


# --- killed, interrupted, concurrent ---------------------------------------------------------------------------


KILLED_ADD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from complm_cli.cache.catalog import load_catalog
    from complm_cli.compose.knowledge import embedder_id
    from complm_cli.compose.route import Embedder
    from complm_cli.corpus import build
    cache, folder, model = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    cat = load_catalog([Path(sys.argv[4])])
    def on_file(path, count):
        print("indexed", path.name, flush=True)
        time.sleep(0.5)
    build.add(cache, "notes", [folder], Embedder(model, cat.embedder.name), embedder_id(cat), on_file=on_file)
    print("committed", flush=True)
""")


def test_a_killed_add_leaves_the_previous_index_whole(isolated, pulled_models, embedder, notes, tmp_path):
    from tests.conftest import _model_dir

    cache = isolated["cache"]
    add(cache, [notes], embedder)
    before = index.info(cache, "notes")
    more = tmp_path / "more"
    more.mkdir()
    for i in range(20):
        (more / f"town{i}.txt").write_text(f"Town {i} lies {i * 3} kilometres east of Kessan on the Zorblat.\n")
    proc = subprocess.Popen([sys.executable, "-c", KILLED_ADD, str(cache), str(more),
                             str(_model_dir(pulled_models, embedder.name)), str(TINY_CATALOG)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if len(seen) == 3:  # three files written into the open transaction
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(60)
    assert proc.returncode == -signal.SIGKILL and all(s.startswith("indexed") for s in seen), proc.stderr.read()

    after = index.info(cache, "notes")
    assert (after.passages, after.files) == (before.passages, before.files)
    assert index.verify(cache, "notes") == (True, f"ok ({before.passages} passages)")
    assert search(cache, embedder, "Who designed the Vellichor protocol?")[0].record_id == "vell-09"
    assert not any("Town" in h.text for h in search(cache, embedder, "Town 3 east of Kessan", k=6))
    report = add(cache, [more], embedder)  # the dead writer's lock is free; the add completes
    assert report.indexed == 20 and index.info(cache, "notes").passages == before.passages + 20


def test_an_add_interrupted_midway_changes_nothing(isolated, pulled_models, embedder, notes, tmp_path):
    cache = isolated["cache"]
    add(cache, [notes / "rivers.txt"], embedder)
    g = generation(cache)

    def interrupt(path, count):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        add(cache, [notes], embedder, on_file=interrupt)
    assert index.info(cache, "notes").files == 1 and generation(cache) == g
    assert [p.name for p in index.folder(cache, "notes").iterdir()] == [index.DB, f"vectors-{g}.faiss"] or \
        {p.name for p in index.folder(cache, "notes").iterdir() if not p.name.startswith(index.DB)} == {f"vectors-{g}.faiss"}

    with pytest.raises(KeyboardInterrupt):  # a first add that stops leaves no corpus at all
        add(cache, [notes], embedder, name="fresh", on_file=interrupt)
    assert index.names(cache) == ["notes"]


def test_two_adds_at_once_both_land(models, tmp_path):
    folders = []
    for name in ("a", "b"):
        folder = tmp_path / name
        folder.mkdir()
        for i in range(5):
            (folder / f"{name}{i}.txt").write_text(f"Note {name}{i}: the ferry to island {name}{i} leaves at {i} o'clock.\n")
        folders.append(folder)
    procs = [subprocess.Popen([sys.executable, "-m", "complm_cli", "corpus", "add", "shared", str(f), "--json",
                               "--catalog", str(TINY_CATALOG)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
             for f in folders]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err.decode()
    reports = sorted(json.loads(out)["passages"] for out, _ in outs)
    assert reports == [5, 10]  # one went first; the other waited for its lock and added to what it wrote
    cache = Path(os.environ["COMPLM_CACHE_DIR"])
    assert index.info(cache, "shared").files == 10
    assert index.verify(cache, "shared") == (True, "ok (10 passages)")


# --- bad input -------------------------------------------------------------------------------------------------


def test_bad_input_is_one_sentence_and_loses_nothing(models, notes, tmp_path, monkeypatch):
    cat = ["--catalog", str(TINY_CATALOG)]
    assert cli("corpus", "add", "notes", str(notes), *cat).exit_code == 0
    cache = Path(os.environ["COMPLM_CACHE_DIR"])
    before = index.info(cache, "notes")

    one_line_error(cli("corpus", "add", "notes", str(tmp_path / "nope"), *cat), 2, "does not exist")
    one_line_error(cli("corpus", "add", "../up", str(notes), *cat), 2, "not a corpus name")

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "The Orrin bridge is red."}\n{"title": "no text here"}\n')
    one_line_error(cli("corpus", "add", "notes", str(notes), str(bad), *cat), 9, "bad.jsonl, line 2")

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "blank.txt").write_text("\n\n")
    one_line_error(cli("corpus", "add", "other", str(empty), *cat), 9, "No passages found")
    assert index.names(cache) == ["notes"]  # a first add that failed leaves nothing behind

    (notes / "rivers.txt").write_text("changed, then unreadable")
    real = Path.read_bytes

    def unreadable(path):
        if path.name == "rivers.txt":
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    with monkeypatch.context() as m:  # as root, a chmod would not stop the read
        m.setattr(Path, "read_bytes", unreadable)
        one_line_error(cli("corpus", "add", "notes", str(notes), *cat), 9, "cannot be read (Permission denied)")

    with sqlite3.connect(index.folder(cache, "notes") / index.DB) as con:  # as if indexed with another embedder
        con.execute("UPDATE meta SET value = 'other-embedder@0123456789ab' WHERE key = 'embedder_id'")
    one_line_error(cli("corpus", "add", "notes", str(notes), *cat), 7, "another embedder")

    after = index.info(cache, "notes")
    assert (after.passages, after.files) == (before.passages, before.files)


def test_a_failed_add_lets_the_embedder_go(models, notes, tmp_path, monkeypatch):
    from complm_cli.compose.route import Embedder

    closed = []
    real_close = Embedder.close
    monkeypatch.setattr(Embedder, "close", lambda self, wait=True: (closed.append(self.name), real_close(self, wait)))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"title": "no text here"}\n')
    one_line_error(cli("corpus", "add", "notes", str(notes), str(bad), "--catalog", str(TINY_CATALOG)), 9, "line 1")
    assert len(closed) == 1
