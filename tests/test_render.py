"""What users see: the live table, the tree, mermaid, dot and the summary line."""

import io

from rich.console import Console

from complm_cli import render
from complm_cli.compose.dag import Node, Plan
from complm_cli.events import AnswerDone, AnswerToken, NodeDone, NodeFailed, NodeStarted, PlanReady, Stage
from complm_cli.compose.route import Route

PLAN = Plan("Where was the painter of The Starry Night born, and what is 2 plus 2?",
            [Node(1, "Who painted The Starry Night?"), Node(2, "In which country was {1} born?", (1,)), Node(3, "What is 2 plus 2?")])
ROUTES = {1: Route("big", 0.31, {"big": 0.31, "small": 0.1}), 2: Route("big", 0.12, {"big": 0.12}, "fallback"),
          3: Route("small", 0.44, {"small": 0.44})}


def text_of(renderable, width=140) -> str:
    console = Console(file=io.StringIO(), width=width, force_terminal=False, color_system=None)
    console.print(renderable)
    return console.file.getvalue()


def test_live_view_follows_the_events():
    view = render.LiveView(Console(file=io.StringIO(), width=140))
    view(Stage("plan", "big"))
    assert "plan (big)" in text_of(view._render())
    view(PlanReady(PLAN, ROUTES))
    view(NodeStarted(1, "big", "Who painted The Starry Night?"))
    view(NodeDone(1, "Vincent van Gogh", 1.0, 5))
    view(NodeStarted(2, "big", "In which country was Vincent van Gogh born?"))
    view(NodeFailed(3, "the expert crashed"))
    view(AnswerToken("The Nether"))
    shown = text_of(view._render())
    assert "In which country was Vincent van Gogh born?" in shown  # after substitution
    assert "big (0.12, fallback)" in shown and "small (0.44)" in shown
    assert "done" in shown and "running" in shown and "failed: the expert crashed" in shown
    assert "The Nether" in shown  # the answer streams under the table
    view(AnswerDone("The Netherlands; 4"))
    assert "The Nether" not in text_of(view._render())  # printed once, as Markdown, by the caller


def test_tree_groups_levels_and_shows_routes():
    shown = text_of(render.tree(PLAN, ROUTES))
    assert "level 1 (run at the same time)" in shown and "level 2" in shown
    assert "→ small 0.44" in shown and "below threshold: fallback" in shown and "needs 1" in shown


def test_mermaid_and_dot_draw_every_edge_and_the_answer():
    mermaid = render.mermaid(PLAN, ROUTES)
    assert "N1 --> N2" in mermaid and "N2 --> A" in mermaid and "N3 --> A" in mermaid and "N1 --> A" not in mermaid
    dot = render.dot(PLAN, ROUTES)
    assert "n1 -> n2;" in dot and "n3 -> answer;" in dot and dot.endswith("}")


def test_graph_dict_lists_levels_width_and_scores():
    data = render.graph_dict(PLAN, ROUTES)
    assert data["levels"] == [[1, 3], [2]] and data["width"] == 2
    assert data["nodes"][1]["reason"] == "fallback" and data["nodes"][0]["scores"]["small"] == 0.1


def test_live_view_shows_steps_running_while_the_plan_is_written():
    from complm_cli.events import StepPlanned

    view = render.LiveView(Console(file=io.StringIO(), width=140))
    view(Stage("plan", "big"))
    view(StepPlanned(PLAN.nodes[0], ROUTES[1]))
    view(StepPlanned(Node(2, "Where was {1} born?", (1,)), ROUTES[2]))
    shown = text_of(view._render())
    assert "plan (big)" in shown and "Who painted The Starry Night?" in shown and "waiting" in shown
    view(NodeStarted(1, "big", "Who painted The Starry Night?"))
    assert "running" in text_of(view._render()) and "plan (big)" in text_of(view._render())
    view(PlanReady(PLAN, ROUTES))  # the final plan keeps step 1 as streamed, and changed step 2
    rows = {line.split()[0]: line for line in text_of(view._render()).splitlines() if line.strip()[:1].isdigit()}
    assert "running" in rows["1"]
    assert "In which country was {1} born?" in rows["2"] and "waiting" in rows["2"] and "1" in rows["2"].split("?")[1]
    assert "What is 2 plus 2?" in rows["3"]
