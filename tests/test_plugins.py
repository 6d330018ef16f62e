"""Plugins: a tool expert from a package of the user's, found through its entry point, routed and run.

Each test installs its plugin as a real distribution (a *.dist-info folder
with an entry_points.txt) on sys.path, so discovery goes through
importlib.metadata exactly as for a pip-installed package.
"""

from __future__ import annotations

import textwrap

import pytest

from complm_cli.cache.catalog import load_catalog
from complm_cli.compose.dag import Node, Plan
from complm_cli.errors import CatalogError
from complm_cli.experts import plugins
from tests.helpers import CATALOG, Fake, fake_session

WORDCOUNT = '''
import re

from complm_cli.experts.plugins import hookimpl
from complm_cli.experts.tools import Tool, ToolResult


class WordCount(Tool):
    name = "wordcount"

    def claims(self, step):
        m = re.match(r"(?i)how many words are in (.+?)\\??$", step)
        return m.group(1) if m else None

    def run(self, step, parents):
        text = self.fill(self.claims(step), parents)
        return ToolResult(str(len(text.split())), f"words in '{text}'")


@hookimpl
def register_tools(register):
    register(WordCount())
'''

TOOL_ENTRY = """
[experts."wordcount"]
kind = "tool"
tool = "wordcount"
description = "Counts the words of a text exactly."
roles = ["expert"]
"""


def install(tmp_path, monkeypatch, module: str, source: str, name: str = "complm-test-plugin") -> None:
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{name.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[complm]\n{module} = {module}\n")
    monkeypatch.syspath_prepend(str(site))


@pytest.fixture(autouse=True)
def fresh_plugins(monkeypatch):
    monkeypatch.delenv("COMPLM_NO_PLUGINS", raising=False)
    plugins.reset()
    yield
    plugins.reset()


def test_the_calculator_is_a_registered_tool_without_any_plugin():
    assert "calculator" in plugins.tools()


def test_a_plugin_tool_is_found_routed_and_run(tmp_path, monkeypatch):
    install(tmp_path, monkeypatch, "complm_wordcount", WORDCOUNT)
    fake = Fake(answers={"Who wrote the opening line of Moby-Dick?": "Call me Ishmael, wrote Herman Melville."})
    session = fake_session(tmp_path, fake, extra=TOOL_ENTRY)
    plan = Plan("How many words has the opening line of Moby-Dick?",
                [Node(1, "Who wrote the opening line of Moby-Dick?"), Node(2, "How many words are in {1}?", (1,))])
    with session:
        routes = session.route(plan)
        result = session.ask(plan.question, plan=plan, routes=routes)
    assert routes[2].expert == "wordcount" and routes[2].formula == "{1}"
    assert routes[1].expert != "wordcount"  # a step the tool does not claim goes to a model
    node = result.nodes[1]
    assert node.status == "done" and node.answer == "6"
    assert node.calculation == {"formula": "{1}", "expression": "words in 'Call me Ishmael, wrote Herman Melville.'",
                                "result": "6"}
    assert result.status == "ok" and result.answer.endswith("= 6")


def test_a_catalog_naming_a_tool_no_plugin_registers_says_which_tools_exist(tmp_path):
    catalog = tmp_path / "models.toml"
    catalog.write_text(CATALOG.format(sha="ab" * 32) + TOOL_ENTRY)
    with pytest.raises(CatalogError) as info:
        load_catalog([catalog])
    assert "'wordcount' is not a known tool" in info.value.message and "calculator" in info.value.message
    assert "tool" in info.value.message and str(catalog) in info.value.message


def test_a_plugin_that_fails_to_import_is_one_sentence_and_can_be_switched_off(tmp_path, monkeypatch):
    install(tmp_path, monkeypatch, "complm_broken", "raise ImportError('no module named units_db')\n")
    with pytest.raises(CatalogError, match=r"A complm plugin could not be loaded \(ImportError: no module named units_db\); "
                                           r"uninstall it, or set COMPLM_NO_PLUGINS=1"):
        plugins.tools()
    plugins.reset()
    monkeypatch.setenv("COMPLM_NO_PLUGINS", "1")
    assert list(plugins.tools()) == ["calculator"]


def test_two_plugins_with_one_tool_name_are_refused(tmp_path, monkeypatch):
    install(tmp_path, monkeypatch, "complm_wordcount", WORDCOUNT, name="one")
    install(tmp_path, monkeypatch, "complm_wordcount_again", WORDCOUNT, name="two")
    with pytest.raises(CatalogError, match="Two complm plugins register a tool named 'wordcount'"):
        plugins.tools()


def test_the_readme_example_is_a_working_plugin(tmp_path, monkeypatch):
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    example = readme.split("## Your own tool experts", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    install(tmp_path, monkeypatch, "complm_wordcount", example)
    tool = plugins.tools()["wordcount"]
    step = "How many words are in {1}?"
    assert tool.claims(step) == "{1}" and tool.claims("Who wrote Moby-Dick?") is None
    assert tool.run(step, {1: ("Who wrote it?", "Herman Melville wrote it")}).result == "4"
