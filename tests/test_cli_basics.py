"""The CLI shell: help without the ML stack, list, doctor, error handling."""

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from complm_cli.cli.app import app

runner = CliRunner()
HEAVY = ("torch", "sentence_transformers", "llama_cpp", "huggingface_hub", "transformers")


@pytest.mark.parametrize("args", [["--help"], ["list"], ["pull", "--help"], ["ask", "--help"], ["graph", "--help"]])
def test_light_commands_do_not_import_the_ml_stack(args, isolated):
    code = ("import sys, json, io, contextlib\n"
            f"sys.argv = ['complm', *{args!r}]\n"
            "from complm_cli.cli.app import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    try:\n        main()\n    except SystemExit:\n        pass\n"
            "print(json.dumps(sorted(sys.modules)))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    modules = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert not [m for m in HEAVY if m in modules]


def test_help_lists_every_command():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("ask", "graph", "pull", "list", "rm", "verify", "doctor", "eval"):
        assert command in result.stdout


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.startswith("complm ")


def test_list_json_shows_catalog_and_nothing_pulled(isolated):
    result = runner.invoke(app, ["list", "--json"])
    assert result.exit_code == 0
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert rows["qwen2.5-coder-1.5b"]["size"] == 1117320768
    assert rows["all-minilm-l6-v2"]["kind"] == "embedder"
    assert not any(r["pulled"] for r in rows.values())
    assert {r["name"] for r in rows.values() if r["default"]} == {"smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b", "all-minilm-l6-v2"}


def test_list_table(isolated):
    result = runner.invoke(app, ["list"])
    assert result.exit_code == 0 and "smollm2-135m" in result.stdout


def test_doctor_json(isolated):
    result = runner.invoke(app, ["doctor", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["cache_dir"] == str(isolated["cache"])
    assert report["run_log"] == {"path": str(isolated["cache"].parent / "data" / "logs.db"), "on": True}
    assert report["llama_cpp"]["importable"] is True
    assert isinstance(report["llama_cpp"]["gpu_offload"], bool)
    assert report["cpu_threads"] >= 1
    assert "smollm2-135m" in report["missing_defaults"]
    assert report["server"] is None  # no COMPLM_SERVER


def test_bad_catalog_is_one_sentence_with_exit_5(tmp_path, isolated):
    bad = tmp_path / "bad.toml"
    bad.write_text("[experts.x\n")
    result = runner.invoke(app, ["list", "--catalog", str(bad)])
    assert result.exit_code == 5
    assert str(bad) in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_unknown_expert_exit_4(isolated):
    result = runner.invoke(app, ["pull", "nobody"])
    assert result.exit_code == 4 and "nobody" in result.output


def test_rm_needs_names(isolated):
    assert runner.invoke(app, ["rm"]).exit_code == 2


def test_verify_with_nothing_pulled(isolated):
    result = runner.invoke(app, ["verify"])
    assert result.exit_code == 0 and "nothing is pulled" in result.stdout


def test_eval_needs_a_dataset_or_sample(isolated):
    result = runner.invoke(app, ["eval"])
    assert result.exit_code == 2


def test_eval_bad_dataset_names_the_line(tmp_path, isolated):
    data = tmp_path / "d.jsonl"
    data.write_text('{"question": "q", "answer": "a"}\nnot json\n')
    result = runner.invoke(app, ["eval", str(data)])
    assert result.exit_code == 9 and "Line 2" in result.output


def test_bad_value_in_config_file_is_a_catalog_error(isolated):
    isolated["config"].mkdir(parents=True)
    (isolated["config"] / "config.toml").write_text('workers = "many"\n')
    result = runner.invoke(app, ["list"])
    assert result.exit_code == 5 and "config.toml" in result.output


def test_out_of_range_setting_is_a_usage_error(isolated, monkeypatch):
    monkeypatch.setenv("COMPLM_WORKERS", "-1")
    result = runner.invoke(app, ["list"])
    assert result.exit_code == 2 and "workers" in result.output


def test_graph_needs_only_the_planner_and_the_embedder():
    from complm_cli.cache.catalog import load_catalog
    from complm_cli.compose.session import models_needed

    cat = load_catalog()
    assert {m.name for m in models_needed(cat, mode="plan")} == {"qwen2.5-coder-1.5b", "all-minilm-l6-v2"}
    assert {m.name for m in models_needed(cat, mode="monolithic")} == {"qwen2.5-coder-1.5b"}
    assert {m.name for m in models_needed(cat, mode="parallel")} == {
        "qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b", "smollm2-135m", "all-minilm-l6-v2"}
    assert {m.name for m in models_needed(cat, "smollm2-135m", "parallel")} == {
        "qwen2.5-coder-1.5b", "smollm2-135m", "all-minilm-l6-v2"}


def test_graph_offline_names_the_missing_planner(isolated):
    result = runner.invoke(app, ["graph", "Who wrote Hamlet?", "--offline"])
    assert result.exit_code == 4
    assert "qwen2.5-coder-1.5b" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("args, words", [
    (["ask", "q", "--timeout", "0"], ["--timeout"]),
    (["ask", "q", "--timeout", "-1"], ["--timeout"]),
    (["ask", "q", "--timeout", "nan"], ["--timeout"]),
    (["ask", "q", "--gpu-layers", "-5"], ["--gpu-layers"]),
    (["ask", "q", "--max-memory", "lots"], ["--max-memory"]),
    (["ask", "q", "--votes", "0"], ["--votes", "1"]),
    (["eval", "--sample", "--votes", "10"], ["--votes", "9"]),
])
def test_bad_flags_are_usage_errors_before_anything_loads(isolated, args, words):
    result = runner.invoke(app, [*args, "--offline"])
    assert result.exit_code == 2, result.output
    assert all(w in result.output for w in words) and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize("line", ["workers = -3", 'max_memory = "lots"', "max_memory = -1", 'offline = "nope"'])
def test_bad_config_values_exit_5_naming_file_and_key(isolated, line):
    isolated["config"].mkdir(parents=True)
    (isolated["config"] / "config.toml").write_text(line + "\n")
    result = runner.invoke(app, ["list"])
    assert result.exit_code == 5, result.output
    assert "config.toml" in result.output and line.split()[0] in result.output


def test_cache_dir_that_is_a_file(isolated, tmp_path, monkeypatch):
    (tmp_path / "afile").write_text("x")
    monkeypatch.setenv("COMPLM_CACHE_DIR", str(tmp_path / "afile"))
    result = runner.invoke(app, ["pull", "smollm2-135m"])
    assert result.exit_code == 2, result.output
    assert "COMPLM_CACHE_DIR" in result.output and "Traceback" not in result.output


def _complm_process(*args, stdin: bytes = b"", stdout=subprocess.PIPE, env: dict | None = None):
    return subprocess.run([sys.executable, "-m", "complm_cli", *args], input=stdin, stdout=stdout,
                          stderr=subprocess.PIPE, env={**os.environ, **(env or {})}, timeout=120)


@pytest.mark.parametrize("locale", ["C.UTF-8", "C"])
def test_question_on_stdin_that_is_not_utf8(isolated, locale):
    proc = _complm_process("ask", "--offline", stdin=b"What is caf\xe9 in \xff English?\n", env={"LC_ALL": locale})
    err = proc.stderr.decode()
    assert proc.returncode == 2, err
    assert "UTF-8" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_question_argument_that_is_not_utf8(isolated):
    proc = subprocess.run([sys.executable, "-m", "complm_cli", "ask", b"caf\xe9?", "--offline"], capture_output=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert b"UTF-8" in proc.stderr


def test_stdout_on_a_full_device(isolated):
    with open("/dev/full", "wb") as full:
        proc = _complm_process("list", "--json", stdout=full)
    err = proc.stderr.decode()
    assert proc.returncode == 10, err
    assert "No space left on device" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_usage_errors_pull_no_model(isolated):
    """Usage errors are found before anything is pulled: the cache stays empty."""
    result = runner.invoke(app, ["ask", "   "])
    assert result.exit_code == 2 and "empty" in result.output
    assert runner.invoke(app, ["ask", "q", "--mode", "turbo"]).exit_code == 2
    result = runner.invoke(app, ["ask", "q", "--expert", "nobody"])
    assert result.exit_code == 4 and "nobody" in result.output
    result = runner.invoke(app, ["ask", "q", "--offline"])
    assert result.exit_code == 4 and "not pulled" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["eval", "--sample", "--mode", "parallel,turbo"])
    assert result.exit_code == 2 and "turbo" in result.output
    assert not (isolated["cache"] / "models").exists()


def test_json_errors_are_a_document_on_stdout(isolated):
    from typer.testing import CliRunner

    from complm_cli.cli.app import app

    result = CliRunner().invoke(app, ["ask", "Who wrote Hamlet?", "--json", "--offline", "--expert", "nobody"])
    assert result.exit_code == 4
    doc = json.loads(result.stdout)
    assert doc["error"]["exit_code"] == 4 and "nobody" in doc["error"]["message"]


@pytest.mark.parametrize("raised, code, words", [(KeyboardInterrupt(), 130, "interrupted"),
                                                  (RuntimeError("a bug"), 1, "unexpected error: RuntimeError: a bug"),
                                                  (OSError(5, "Input/output error"), 1, "unexpected error: OSError")])
def test_json_gets_a_document_on_ctrl_c_and_on_a_bug_too(isolated, monkeypatch, raised, code, words):
    import complm_cli.cli.question as question

    def boom(*args, **kwargs):
        raise raised

    monkeypatch.setattr(question, "read_question", boom)
    result = runner.invoke(app, ["ask", "--json", "Hi?"])
    assert result.exit_code == code
    doc = json.loads(result.stdout)
    assert doc["error"]["exit_code"] == code and words in doc["error"]["message"]
    assert result.stderr.count("\n") == 1 and words in result.stderr


def test_the_calculator_cannot_be_forced_as_the_answering_model(isolated):
    from typer.testing import CliRunner

    from complm_cli.cli.app import app

    result = CliRunner().invoke(app, ["ask", "What is 2 + 2?", "--offline", "--expert", "calculator"])
    assert result.exit_code == 2 and "built-in tool" in result.stderr


def test_list_shows_the_calculator_as_a_built_in_tool(isolated):
    from typer.testing import CliRunner

    from complm_cli.cli.app import app

    rows = json.loads(CliRunner().invoke(app, ["list", "--json"]).stdout)
    calc = next(r for r in rows if r["name"] == "calculator")
    assert calc["kind"] == "tool" and calc["pulled"] is None and calc["path"] is None
    result = CliRunner().invoke(app, ["pull", "calculator", "--offline"])
    assert result.exit_code == 0 and "nothing to pull" in result.stderr
    result = CliRunner().invoke(app, ["rm", "calculator"])
    assert result.exit_code == 0 and "nothing to remove" in result.stderr


def test_verbose_progress_prints_a_streamed_step_once():
    import io

    from complm_cli.cli.ask import _plain_progress
    from complm_cli.cli.common import Environment
    from complm_cli.compose.dag import Node, Plan
    from complm_cli.events import NodeStarted, PlanReady, Stage, StepPlanned
    from complm_cli.compose.route import Route

    err = io.StringIO()
    listen = _plain_progress(Environment(stdout=io.StringIO(), stderr=err))
    route = Route("big", 0.31, {}, "score")
    listen(Stage("plan", "planner"))
    listen(StepPlanned(Node(1, "Who wrote Hamlet?"), route))
    listen(NodeStarted(1, "big", "Who wrote Hamlet?"))
    listen(PlanReady(Plan("Q?", [Node(1, "Who wrote Hamlet?"), Node(2, "Where was {1} born?", (1,))]), {1: route, 2: route}))
    lines = err.getvalue().splitlines()
    assert lines == ["[plan] planner", "  node 1: Who wrote Hamlet? -> big (0.31, score), while planning",
                     "  node 1 started on big", "  node 2: Where was {1} born? -> big (0.31, score)"]


@pytest.mark.parametrize("value, traceback", [("false", False), ("0", False), ("no", False), ("", False),
                                              ("1", True), ("true", True), ("YES", True)])
def test_complm_debug_is_a_boolean_and_keeps_the_exit_code(isolated, monkeypatch, value, traceback):
    monkeypatch.setenv("COMPLM_DEBUG", value)
    result = runner.invoke(app, ["rm", "no-such-model"])
    assert result.exit_code == 4, result.output  # the documented code in debug mode too: the traceback is extra
    assert ("Traceback (most recent call last)" in result.stderr) is traceback
    assert result.stderr.rstrip().splitlines()[-1].startswith("complm: No expert named 'no-such-model'")


def test_a_debug_value_that_is_not_a_boolean_is_a_usage_error(isolated, monkeypatch):
    monkeypatch.setenv("COMPLM_DEBUG", "maybe")
    result = runner.invoke(app, ["list"])
    assert result.exit_code == 2 and result.stderr == "complm: COMPLM_DEBUG='maybe' is not true or false (use 1 or 0).\n"


def test_debug_on_a_bug_prints_the_traceback_and_exits_1(isolated, monkeypatch):
    import complm_cli.cli.models as models

    def broken(*args, **kwargs):
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(models, "load", broken)
    monkeypatch.setenv("COMPLM_DEBUG", "1")
    result = runner.invoke(app, ["list"])
    assert result.exit_code == 1 and "Traceback" in result.stderr
    assert result.stderr.rstrip().splitlines()[-1].startswith("complm: unexpected error: ZeroDivisionError: boom")


def test_a_flag_the_parser_refuses_is_exit_2_and_with_json_a_document(isolated, capsys):
    from complm_cli.cli.app import run

    assert run(["ask", "--json", "--workers", "0", "Hi?"]) == 2
    out, err = capsys.readouterr()
    doc = json.loads(out)
    assert doc["error"]["exit_code"] == 2 and "--workers" in doc["error"]["message"] and "--workers" in err
    assert run(["ask", "--workers", "0", "Hi?"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "--workers" in err
    assert run(["--version"]) == 0 and run(["rm", "no-such-model"]) == 4


def test_a_config_file_that_is_a_folder_is_exit_5_not_ignored(isolated):
    (isolated["config"] / "config.toml").mkdir(parents=True)
    result = runner.invoke(app, ["list"])
    assert result.exit_code == 5 and "is not a file" in result.stderr and "config.toml" in result.stderr
