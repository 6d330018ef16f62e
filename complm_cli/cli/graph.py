"""`complm graph`: plan and route a question without running it."""

from __future__ import annotations

import contextlib
from pathlib import Path

import typer

from complm_cli.cli.common import (ApiKeyOpt, CatalogOpt, CorpusOpt, ExpertOpt, JsonlOpt, OfflineOpt, QuestionArg, ServerOpt, env, handles_errors,
                                   refuse_local_flags)
from complm_cli.errors import UsageError

FORMATS = ("tree", "json", "mermaid", "dot")


@handles_errors
def graph(
    question: str = QuestionArg,
    fmt: str = typer.Option(None, "--format", "-f", help="tree (default in a terminal), json (default when piped), mermaid or dot."),
    expert: str = ExpertOpt,
    offline: bool = OfflineOpt,
    catalog: Path = CatalogOpt,
    server: str = ServerOpt,
    api_key: str = ApiKeyOpt,
    corpus: list[str] = CorpusOpt,
    as_jsonl: bool = JsonlOpt,
) -> None:
    """Show how a question would be split and routed, without running the experts."""
    from complm_cli import render
    from complm_cli.cli.question import prepare, read_question

    e = env()
    text = read_question(question, e)
    if fmt is not None and fmt not in FORMATS:
        raise UsageError(f"Unknown format '{fmt}'; use one of {', '.join(FORMATS)}.")
    lines = None
    if as_jsonl:
        from complm_cli.cli.jsonl import JsonLines

        if fmt not in (None, "json"):
            raise UsageError(f"--jsonl prints the plan as JSON lines; leave out --format {fmt}.")
        lines = JsonLines(e.stdout)
    if server:
        from complm_cli.serve.client import ServerClient

        refuse_local_flags({"--expert": expert, "--offline": offline or None, "--catalog": catalog})
        _stage(lines, server)
        waiting = e.err_console().status(f"planning on {server}…") if e.stderr_isatty else contextlib.nullcontext()
        with waiting:
            plan, routes = ServerClient(server, api_key, corpora=corpus or None).graph(text)
    else:
        session = prepare(catalog, offline, expert, ("plan",), e, corpora=corpus or None)
        with session:
            _stage(lines, session.planner.name)
            waiting = e.err_console().status(f"planning with {session.planner.name}…") if e.stderr_isatty else contextlib.nullcontext()
            with waiting:
                plan, routes = session.plan_and_route(text)
    fmt = fmt or ("tree" if e.stdout_isatty else "json")
    if lines is not None:
        from complm_cli.events import PlanReady

        lines(PlanReady(plan, routes))
        lines.write({"graph": render.graph_dict(plan, routes)})
    elif fmt == "json":
        print(render.to_json(render.graph_dict(plan, routes)), file=e.stdout)
    elif fmt == "mermaid":
        print(render.mermaid(plan, routes), file=e.stdout)
    elif fmt == "dot":
        print(render.dot(plan, routes), file=e.stdout)
    else:
        e.out_console().print(render.tree(plan, routes))


def _stage(lines, detail: str) -> None:
    """--jsonl: planning starts (on this planner, or on this server)."""
    if lines is not None:
        from complm_cli.events import Stage

        lines(Stage("plan", detail))
