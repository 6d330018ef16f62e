"""Knowledge experts end to end: retrieval, routing to a corpus, the reader on the real 135M model, and the
sources in every output form (--json, piped text, --verbose, the live view, serve), with the real embedder."""

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from complm_cli import render
from complm_cli.cache.catalog import load_catalog
from complm_cli.cache.config import load_settings
from complm_cli.cli.app import app
from complm_cli.compose import prompts
from complm_cli.compose.dag import Node, Plan
from complm_cli.compose.knowledge import FLOOR, THRESHOLD, Knowledge, embedder_id, with_corpora
from complm_cli.compose.routing import Routing
from complm_cli.compose.session import Session
from complm_cli.corpus import build
from complm_cli.events import NodeSources
from tests.conftest import ROOT, TINY_CATALOG

pytestmark = pytest.mark.model

runner = CliRunner()
CAT = ["--catalog", str(TINY_CATALOG)]
ZORBLAT = "How long is the Zorblat River?"  # the 135M reader answers this one from its passage
ABSENT = "What is the boiling point of tungsten?"  # no passage of the notes is close to it


@pytest.fixture
def corpus(models, embedder, notes):
    """The notes folder indexed as corpus 'notes' in this test's cache."""
    build.add(models, "notes", [notes], embedder, embedder_id(load_catalog([TINY_CATALOG])))
    return models


def ask(*args, input=None):
    return runner.invoke(app, ["ask", *args, *CAT, "--seed", "1"], input=input)


def knowledge(cache: Path, embedder, names=("notes",)) -> Knowledge:
    return Knowledge(cache, with_corpora(load_catalog([TINY_CATALOG]), list(names)), embedder)


# --- retrieval and routing -------------------------------------------------------------------------------------


def test_hybrid_search_finds_the_passage_by_meaning_and_by_rare_words(corpus, embedder):
    k = knowledge(corpus, embedder)
    try:
        [e] = k.experts
        by_meaning = k.retrieve(e, "Who came up with the Vellichor radio telemetry scheme?")
        assert by_meaning[0].record_id == "vell-09" and by_meaning[0].where() == "summaries.jsonl #vell-09"
        by_name = k.retrieve(e, "Ilse Marrow")  # a name the passage holds, in a question of two words
        assert Path(by_name[0].file).name == "rivers.txt" and by_name[0].where() == "rivers.txt:1-5"
        quill = k.retrieve(e, "When was Quillfeather first released?")
        assert quill[0].title == "Quillfeather" and quill[0].where() == "libraries.md:7-9"
        assert all(h.score >= FLOOR for h in quill) and quill[0].score > quill[-1].score
        assert k.retrieve(e, ABSENT) == []  # nothing close enough: no passage, no source
        assert len(k.retrieve_all("Who designed the Vellichor protocol, and how long is the Zorblat River?")) == 4
    finally:
        k.close()


def test_bm25_leaves_out_words_in_a_great_many_passages(corpus):
    from complm_cli.corpus.search import Searcher

    s = Searcher(corpus, "notes", embedder_id(load_catalog([TINY_CATALOG])))
    try:
        assert s.common == 500  # a small corpus: every word is looked for
        assert s._rare(["zorblat", "quillfeather", "kessan"]) == ["zorblat", "quillfeather", "kessan"]
        s.common = 1  # as if 'quillfeather' (in 2 passages) were common
        assert s._rare(["zorblat", "quillfeather", "nowhere"]) == ["zorblat", "nowhere"]
        assert s._rare(["quillfeather", "released"]) == ["quillfeather", "released"]  # all common: the rarest stay
    finally:
        s.close()


def test_a_step_close_to_the_passages_goes_to_the_corpus_and_others_do_not(corpus, embedder):
    k = knowledge(corpus, embedder)
    cat = k.catalog
    routing = Routing(cat, load_settings(), embedder, None, k)
    plan = Plan("q", [Node(1, "When was Quillfeather first released?"), Node(2, "What is the capital of France?"),
                      Node(3, "Who is the mayor of Kessan?"), Node(4, "What is 17 * 3?")])
    try:
        routes = routing.route(plan)
    finally:
        k.close()
    assert routes[1].expert == "notes" and routes[1].reason == "passages" and routes[1].score >= THRESHOLD
    assert routes[3].expert == "notes"
    assert routes[2].expert != "notes" and routes[2].reason != "passages"
    assert routes[4].expert == "calculator"


def test_a_catalog_corpus_expert_is_routed_to_without_a_flag(corpus, isolated, notes):
    (isolated["config"]).mkdir(parents=True, exist_ok=True)
    (isolated["config"] / "models.toml").write_text(
        '[experts.handbook]\nkind = "corpus"\ncorpus = "notes"\nreader = "smollm2-135m"\n'
        'description = "The team notes."\n')
    result = runner.invoke(app, ["graph", *CAT], input=ZORBLAT)
    assert result.exit_code == 0, result.output
    graph = json.loads(result.stdout)
    assert "handbook" in [n["expert"] for n in graph["nodes"]]
    listed = json.loads(runner.invoke(app, ["list", "--json", *CAT]).stdout)
    [row] = [r for r in listed if r["name"] == "handbook"]
    assert row["kind"] == "corpus" and row["corpus"] == "notes" and row["indexed"] and row["reader"] == "smollm2-135m"
    table = runner.invoke(app, ["list", *CAT]).stdout
    assert "handbook" in table and "indexed" in table and "built-in" not in table.split("handbook")[1].split("\n")[0]


# --- the answer and its sources, in every output form ----------------------------------------------------------


def test_json_nodes_carry_their_sources(corpus):
    result = ask(ZORBLAT, "--corpus", "notes", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    looked_up = [n for n in doc["nodes"] if n["expert"] == "notes"]
    assert looked_up, doc["nodes"]
    for n in looked_up:
        assert not n["not_found"] and n["sources"]
        for s in n["sources"]:
            assert {"corpus", "passage", "file", "title", "score", "lines"} <= set(s) and s["corpus"] == "notes"
    assert "412" in doc["answer"]
    assert doc["sources"][0]["file"].endswith("rivers.txt") and doc["sources"][0]["lines"] == [1, 5]
    node_sources = [(s["corpus"], s["passage"]) for n in doc["nodes"] for s in n["sources"]]
    assert sorted({(s["corpus"], s["passage"]) for s in doc["sources"]}) == sorted(set(node_sources))


def test_a_piped_answer_ends_with_its_sources_unless_told_not_to(corpus):
    result = ask(ZORBLAT, "--corpus", "notes")
    assert result.exit_code == 0, result.output
    answer, _, sources = result.stdout.partition("Sources:\n")
    assert "412" in answer
    assert sources.splitlines()[0] == "[1] notes: rivers.txt:1-5 (rivers)"
    bare = ask(ZORBLAT, "--corpus", "notes", "--no-sources")
    assert bare.exit_code == 0 and "Sources:" not in bare.stdout and "412" in bare.stdout


def test_verbose_names_each_steps_passages(corpus):
    result = ask(ZORBLAT, "--corpus", "notes", "-v", "--no-sources")
    assert result.exit_code == 0, result.output
    assert "-> notes (0." in result.stderr and ", passages)" in result.stderr
    assert "source: notes rivers.txt:1-5 'rivers' (0.7" in result.stderr


def test_the_live_view_shows_the_passages_of_each_step(corpus):
    view = render.LiveView(Console(file=io.StringIO(), width=140))
    session = Session(load_settings().replace(seed=1), catalog=load_catalog([TINY_CATALOG]), corpora=["notes"])
    try:
        result = session.ask(ZORBLAT, on_event=view)
    finally:
        session.close()
    shown = Console(file=io.StringIO(), width=140, color_system=None)
    shown.print(view._render())
    assert "← notes rivers.txt:1-5 rivers (0.7" in shown.file.getvalue()
    printed = Console(file=io.StringIO(), width=140, color_system=None)
    render.print_answer(printed, result)
    assert "Sources:\n[1] notes: rivers.txt:1-5 (rivers)" in printed.file.getvalue()


def test_monolithic_with_a_corpus_is_one_retrieval_for_the_whole_question(corpus):
    events = []
    session = Session(load_settings().replace(seed=1), catalog=load_catalog([TINY_CATALOG]), modes=("monolithic",),
                      corpora=["notes"])
    try:
        result = session.ask(ZORBLAT, mode="monolithic", on_event=events.append)
    finally:
        session.close()
    [retrieval] = [e for e in events if isinstance(e, NodeSources)]
    assert len(result.nodes) == 1 and result.nodes[0].expert == "smollm2-135m"
    assert retrieval.sources[0].where() == "rivers.txt:1-5"
    assert "412" in result.answer and result.to_dict()["sources"][0]["file"].endswith("rivers.txt")


def test_a_question_the_corpus_does_not_hold_is_not_answered_as_sourced(corpus):
    result = ask(ABSENT, "--corpus", "notes", "--mode", "monolithic", "--json")
    assert result.exit_code == 3, result.output
    doc = json.loads(result.stdout)
    assert doc["answer"] == prompts.NOT_IN_CORPUS and doc["status"] == "partial" and doc["sources"] == []
    assert doc["nodes"][0]["not_found"] and "the corpus does not say" in result.stderr
    assert doc["tokens"]["total"] == 0  # no passage: no model was asked


def test_a_knowledge_step_with_no_passage_asks_no_reader():
    import threading
    import time

    from complm_cli.compose.cancel import AnyOf
    from complm_cli.compose.knowledge import corpus_expert
    from complm_cli.compose.node import NodeTask, run_task
    from complm_cli.events import NodeDone, NodeStarted

    class NothingClose:  # a corpus none of whose passages is close to the step
        def retrieve(self, expert, question):
            return []

    class NoPool:
        def acquire(self, *a, **kw):
            raise AssertionError("a reader was asked")

    expert = corpus_expert("notes", load_catalog([TINY_CATALOG]))
    task = NodeTask(1, ABSENT, expert, (), (), False, 1, threading.Event(), AnyOf(threading.Event()), time.perf_counter(),
                    knowledge=NothingClose())
    events = []
    out = run_task(task, NoPool(), events.append, lambda t: None)
    assert (out.status, out.answer, out.not_found, out.sources) == ("done", prompts.NOT_IN_CORPUS, True, [])
    assert [type(e) for e in events] == [NodeSources, NodeStarted, NodeDone]


def test_a_reader_that_says_the_passages_do_not_hold_it_leaves_no_sources():
    for reply in ("Not in the corpus.", "The passages do not say.", "not in the corpus"):
        assert prompts.says_not_found(reply)
    for reply in ("The Zorblat River is 412 kilometres long.", "No, Kessan is not on the coast."):
        assert not prompts.says_not_found(reply), reply


# --- bad input at ask time -------------------------------------------------------------------------------------


def test_an_unknown_corpus_is_one_sentence_and_exit_4(models):
    result = ask(ZORBLAT, "--corpus", "nope")
    assert result.exit_code == 4 and "Traceback" not in result.output
    assert result.stderr.strip().startswith("complm: No corpus named 'nope'") and result.stderr.count("\n") == 1


def test_a_corpus_of_another_embedder_is_refused_before_anything_runs(corpus):
    import sqlite3

    from complm_cli.corpus import index

    with sqlite3.connect(index.folder(corpus, "notes") / index.DB) as con:
        con.execute("UPDATE meta SET value = 'bge-small@000000000000' WHERE key = 'embedder_id'")
    result = ask(ZORBLAT, "--corpus", "notes", "--json")
    assert result.exit_code == 7 and "another embedder" in json.loads(result.stdout)["error"]["message"]


def test_COMPLM_CORPUS_names_the_corpora_of_a_run(corpus):
    proc = subprocess.run([sys.executable, "-m", "complm_cli", "ask", ZORBLAT, "--json", *CAT, "--seed", "1"],
                          capture_output=True, text=True, cwd=ROOT, timeout=600,
                          env={**__import__("os").environ, "COMPLM_CORPUS": "notes"})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["sources"]


# --- serve -----------------------------------------------------------------------------------------------------


def test_serve_answers_from_a_corpus_named_in_the_request(served, embedder, notes):
    build.add(served.session.settings.cache_dir, "notes", [notes], embedder, embedder_id(load_catalog([TINY_CATALOG])))
    response = served.client().chat.completions.create(
        model="complm-monolithic", messages=[{"role": "user", "content": ZORBLAT}], extra_body={"corpus": ["notes"]})
    record = response.model_extra["complm"]
    assert "412" in response.choices[0].message.content
    assert record["sources"][0]["file"].endswith("rivers.txt") and record["nodes"][0]["sources"]

    status, body = served.post(json.dumps({"model": "complm", "messages": [{"role": "user", "content": ZORBLAT}],
                                           "corpus": ["nope"]}).encode())
    assert status == 400 and body["error"]["code"] == "corpus_not_found" and "nope" in body["error"]["message"]
