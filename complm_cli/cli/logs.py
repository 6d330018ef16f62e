"""`complm logs`: the runs `complm ask` kept (runlog.py): list, search, show one; `logs off|on|path`."""

from __future__ import annotations

import json
import time

import typer

from complm_cli.cli.common import JsonOpt, env, handles_errors, load
from complm_cli.errors import ExitCode

app = typer.Typer(help="The run log: every `complm ask`, with its plan, answers and timings.", add_completion=False,
                  pretty_exceptions_enable=False, invoke_without_command=True)


@app.callback()
@handles_errors
def logs(
    ctx: typer.Context,
    count: int = typer.Option(10, "-n", "--count", min=1, help="How many of the last runs to list."),
    query: str = typer.Option(None, "-q", "--query", help="Only runs whose question or answer holds this text."),
    run_id: int = typer.Option(None, "--id", help="Show this run in full: its graph, each step's answer, the answer."),
    as_json: bool = JsonOpt,
) -> None:
    """List the last runs (newest first), or show one with --id."""
    if ctx.invoked_subcommand is not None:
        return
    from complm_cli import runlog
    from complm_cli.cli.common import fail

    settings, _ = load()
    e = env()
    if run_id is not None:
        run = runlog.run(settings, run_id)
        if run is None:
            raise fail(f"No run {run_id} in the log; `complm logs` lists them.", ExitCode.NOT_FOUND)
        if as_json:
            print(json.dumps(run.to_dict(), indent=2, ensure_ascii=False), file=e.stdout)
        else:
            _show(e, run)
        return
    rows = runlog.runs(settings, count, query)
    if as_json:
        print(json.dumps([r.to_dict() for r in rows], indent=2, ensure_ascii=False), file=e.stdout)
        return
    if not rows:
        print("No runs logged yet." if not query else f"No logged run holds '{query}'.", file=e.stderr)
        return
    cells = [(str(r.id), time.strftime("%Y-%m-%d %H:%M", time.localtime(r.started)), r.mode, r.status,
              f"{r.wall_s:.1f}s" if r.wall_s is not None else "", r.question, (r.answer or "").replace("\n", " "))
             for r in rows]
    if not e.stdout_isatty:  # a pipe gets one tab-separated line a run, whole, for cut and awk
        for row in cells:
            print("\t".join(c.replace("\t", " ") for c in row), file=e.stdout)
        return
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    # The run's facts keep their width; the question and answer take what is left of the terminal.
    for col, width in (("id", 3), ("when", 16), ("mode", 10), ("status", 7), ("time", 6)):
        table.add_column(col, no_wrap=True, min_width=width)
    table.add_column("question", overflow="ellipsis", no_wrap=True, ratio=3)
    table.add_column("answer", overflow="ellipsis", no_wrap=True, ratio=2)
    for row in cells:
        table.add_row(*row)
    e.out_console().print(table)


def _show(e, run) -> None:
    from complm_cli import render
    from complm_cli.compose.dag import Node, Plan
    from complm_cli.compose.route import Route

    record = run.record or {}
    nodes = record.get("nodes") or []
    console = e.out_console()
    console.print(f"run {run.id} · {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(run.started))} · {run.mode} · "
                  f"{run.status} · {run.wall_s or 0:.1f} s · complm {run.version}"
                  f"{' · server ' + run.server if run.server else ''}", highlight=False)
    models = ", ".join(m["name"] + (f" ({m['file']})" if m.get("file") else "") for m in run.models)
    console.print(f"models: {models}", highlight=False)
    if nodes:
        plan = Plan(run.question, [Node(n["id"], n["question"], tuple(n["depends_on"])) for n in nodes])
        routes = {n["id"]: Route(n["expert"], n.get("score") or 0.0, {}, n.get("route") or "") for n in nodes}
        console.print(render.tree(plan, routes))
        for n in nodes:
            console.print(f"[bold]{n['id']}[/] {n['status']}: {n.get('answer') or n.get('reason') or ''}", highlight=False)
    console.print()
    console.print(run.answer or "(no answer)", highlight=False, markup=False)
    if record.get("sources"):
        from complm_cli.corpus.search import Hit

        console.print(render.sources_text([Hit.from_source(s) for s in record["sources"]]), style="dim",
                      highlight=False, markup=False)


@app.command("off")
@handles_errors
def off() -> None:
    """Stop logging runs (what is logged stays)."""
    _switch(False)


@app.command("on")
@handles_errors
def on() -> None:
    """Log every run again (the default)."""
    _switch(True)


def _switch(on: bool) -> None:
    from complm_cli import runlog

    settings, _ = load()
    runlog.set_on(settings, on)
    print("Logging is on." if on else "Logging is off; `complm logs on` turns it back on.", file=env().stdout)


@app.command("path")
@handles_errors
def log_path() -> None:
    """Print where the log is."""
    from complm_cli import runlog

    settings, _ = load()
    print(runlog.path(settings), file=env().stdout)
