"""`complm graph`: plan and route a question without running it."""

from __future__ import annotations

import contextlib
from pathlib import Path

import typer

from complm_cli.cli.common import (ApiKeyOpt, CatalogOpt, CorpusOpt, ExpertOpt, JsonlOpt, KeepAliveOpt, NoDaemonOpt, OfflineOpt, QuestionArg,
                                   ServerOpt, env, handles_errors, refuse_local_flags)
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
    no_daemon: bool = NoDaemonOpt,
    keep_alive: str = KeepAliveOpt,
) -> None:
    """Show how a question would be split and routed, without running the experts."""
    from complm_cli import render
    from complm_cli.cli.question import read_question, session_for

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
    from complm_cli.serve.client import ServerClient

    if server:
        refuse_local_flags({"--expert": expert, "--offline": offline or None, "--catalog": catalog, "--keep-alive": keep_alive})
        plan, routes = _on_server(ServerClient(server, api_key, corpora=corpus or None), server, text, lines, e)
    else:
        session, _, _ = session_for(catalog, offline, expert, ("plan",), e, corpora=corpus or None,
                                    no_daemon=no_daemon, keep_alive=keep_alive)
        if isinstance(session, ServerClient):
            plan, routes = _on_server(session, "the background server", text, lines, e)
        else:
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


def _on_server(client, where: str, text: str, lines, e):
    """The plan and routes from a server: one given with --server, or the background one."""
    _stage(lines, where)
    waiting = e.err_console().status(f"planning on {where}…") if e.stderr_isatty else contextlib.nullcontext()
    with waiting:
        return client.graph(text)


def _stage(lines, detail: str) -> None:
    """--jsonl: planning starts (on this planner, or on this server)."""
    if lines is not None:
        from complm_cli.events import Stage

        lines(Stage("plan", detail))
