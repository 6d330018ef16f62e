"""`complm ask`: the whole pipeline on one question."""

from __future__ import annotations

from pathlib import Path

import typer

from complm_cli.cli.common import (ApiKeyOpt, CatalogOpt, CorpusOpt, ExpertOpt, GpuLayersOpt, JsonlOpt, JsonOpt, KeepAliveOpt, NoDaemonOpt,
                                   OfflineOpt, QuestionArg, SeedOpt, ServerOpt, ThreadsOpt, TimeoutOpt, VotesOpt, WorkersOpt, env, handles_errors, refuse_local_flags)
from complm_cli.errors import ExitCode, UsageError

MODE_HELP = "parallel (default): independent nodes at once; sequential: one node at a time; monolithic: one model, no plan."


@handles_errors
def ask(
    question: str = QuestionArg,
    mode: str = typer.Option("parallel", "--mode", "-m", help=MODE_HELP),
    expert: str = ExpertOpt,
    as_json: bool = JsonOpt,
    as_jsonl: bool = JsonlOpt,
    workers: int = WorkersOpt,
    threads: int = ThreadsOpt,
    gpu_layers: int = GpuLayersOpt,
    max_memory: str = typer.Option(None, "--max-memory", help="Memory for resident models, e.g. 8GB (default: 60% of RAM)."),
    seed: int = SeedOpt,
    votes: int = VotesOpt,
    timeout: float = TimeoutOpt,
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Progress on stderr even when piped."),
    offline: bool = OfflineOpt,
    catalog: Path = CatalogOpt,
    server: str = ServerOpt,
    api_key: str = ApiKeyOpt,
    corpus: list[str] = CorpusOpt,
    no_sources: bool = typer.Option(False, "--no-sources", help="Leave the list of sources out of a piped answer."),
    no_log: bool = typer.Option(False, "--no-log", help="Do not keep this run in the run log (`complm logs`)."),
    no_daemon: bool = NoDaemonOpt,
    keep_alive: str = KeepAliveOpt,
) -> None:
    """Answer a question by composing experts: plan, route, run in parallel, aggregate."""
    from complm_cli import render
    from complm_cli.cli.jsonl import JsonLines
    from complm_cli.cli.question import read_question, session_for
    from complm_cli.events import both, ignore
    from complm_cli.compose.modes import check_mode

    e = env()
    if as_json and as_jsonl:
        raise UsageError("--json prints one record at the end and --jsonl a line per event; choose one.")
    text = read_question(question, e)
    check_mode(mode)
    settings = cat = None
    if server:
        from complm_cli.serve.client import ServerClient

        refuse_local_flags({"--expert": expert, "--workers": workers, "--threads": threads, "--gpu-layers": gpu_layers,
                            "--max-memory": max_memory, "--seed": seed, "--votes": votes, "--timeout": timeout, "--catalog": catalog,
                            "--offline": offline or None, "--keep-alive": keep_alive})
        session = ServerClient(server, api_key, corpora=corpus or None)
    else:
        overrides = dict(workers=workers, threads=threads, gpu_layers=gpu_layers, seed=seed, votes=votes,
                         node_timeout=timeout, max_memory=max_memory, corpora=corpus or None)
        session, settings, cat = session_for(catalog, offline, expert, (mode,), e, verbose, no_daemon=no_daemon,
                                             keep_alive=keep_alive, **overrides)
    # A live view only for a person at a terminal: a pipe gets the answer alone.
    live = e.stderr_isatty and e.stdout_isatty and not as_json and not as_jsonl
    lines = JsonLines(e.stdout) if as_jsonl else None
    try:
        if live:
            with render.LiveView(e.err_console()) as view:
                result = session.ask(text, mode=mode, on_event=view)
        else:
            progress = _plain_progress(e) if verbose else ignore
            result = session.ask(text, mode=mode, on_event=progress if lines is None else both(lines, progress))
    finally:
        session.close()
    if lines is not None:
        lines.write({"result": result.to_dict()})
    elif as_json:
        print(render.to_json(result.to_dict()), file=e.stdout)
    elif e.stdout_isatty:
        render.print_answer(e.out_console(), result)
    elif result.answer:
        # A pipe gets the answer once it is whole: a run that fails midway leaves nothing on stdout that reads
        # as an answer (streamed, a remote model that broke off left "Par" there, then exit 8).
        print(result.answer, file=e.stdout, flush=True)
        if result.sources and not no_sources:
            print(render.sources_text(result.sources), file=e.stdout, flush=True)
    if not no_log:
        _log(result, settings, cat, server, e)
    if live or verbose:
        e.err_console().print(f"[dim]{render.summary_line(result)}[/]")
    if result.status == "partial":
        print(f"complm: the answer is partial: {result.reason or 'a step did not finish'}.", file=e.stderr)
        raise typer.Exit(int(ExitCode.PARTIAL))
    if result.status == "failed":
        reasons = "; ".join(f"step {n.id}: {n.reason}" for n in result.nodes if n.reason)
        why = f"steps failed ({reasons})" if reasons else "the model returned an empty answer"
        print(f"complm: no answer: {why}.", file=e.stderr)
        raise typer.Exit(int(ExitCode.MODEL))


def _log(result, settings, catalog, server: str | None, e) -> None:
    """Keep the run in the run log, unless logging is off; a log that cannot be written is a warning.
    A run through --server is logged with the settings alone, without loading the catalog."""
    from complm_cli import runlog
    from complm_cli.cache.config import load_settings
    from complm_cli.errors import ComplmError

    try:
        settings = settings or load_settings()
        if runlog.is_on(settings):
            runlog.record(settings, result, catalog, server)
    except ComplmError as exc:
        print(f"complm: {exc.message}", file=e.stderr)


def _plain_progress(e):
    """--verbose when piped: one line per event on stderr."""
    from complm_cli.compose.dag import readable
    from complm_cli.events import NodeDone, NodeFailed, NodeSources, NodeStarted, PlanReady, Stage, StepPlanned

    shown: set[tuple] = set()  # steps printed while the planner wrote them are not printed again

    def node_line(n, r, note: str = "") -> None:
        shown.add((n.id, n.question, n.depends_on))
        print(f"  node {n.id}: {readable(n.question)} -> {r.expert} ({r.score:.2f}, {r.reason}){note}", file=e.stderr)

    def listen(event) -> None:
        if isinstance(event, Stage):
            print(f"[{event.name}] {event.detail}", file=e.stderr)
        elif isinstance(event, StepPlanned):
            node_line(event.node, event.route, ", while planning")
        elif isinstance(event, PlanReady):
            if event.plan.fallback:
                print(f"  plan fell back to a single node: {event.plan.fallback}", file=e.stderr)
            for n in event.plan.nodes:
                if (n.id, n.question, n.depends_on) not in shown:
                    node_line(n, event.routes[n.id])
        elif isinstance(event, NodeStarted):
            print(f"  node {event.node_id} started on {event.expert}", file=e.stderr)
        elif isinstance(event, NodeSources):
            for h in event.sources:
                print(f"    source: {h.corpus} {h.where()} {h.title!r} ({h.score:.2f})", file=e.stderr)
        elif isinstance(event, NodeDone):
            print(f"  node {event.node_id} done in {event.seconds:.1f} s: {event.answer[:80]!r}", file=e.stderr)
        elif isinstance(event, NodeFailed):
            print(f"  node {event.node_id} {'skipped' if event.skipped else 'failed'}: {event.reason}", file=e.stderr)

    return listen
