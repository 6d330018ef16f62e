"""The `complm` command: a thin Typer shell over the library.

Each command lives in its own module; importing them must stay cheap
(`complm --help` imports no ML stack).
"""

from __future__ import annotations

import contextlib
import os
import sys

import typer

from complm_cli import __version__
from complm_cli.cli import ask, corpus, daemon, doctor, evaluate, graph, logs, models, pull, serve
from complm_cli.cli.common import debug_flag, fail, print_error_document
from complm_cli.errors import ExitCode

app = typer.Typer(
    name="complm",
    help="Answer hard questions by composing small local expert models (Comp-LLM on llama.cpp).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        print(f"complm {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors (or COMPLM_DEBUG=1)."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    if debug:
        os.environ["COMPLM_DEBUG"] = "1"
    elif debug_flag() is None:
        raise fail(f"COMPLM_DEBUG={os.environ['COMPLM_DEBUG']!r} is not true or false (use 1 or 0).", ExitCode.USAGE)


app.command("ask")(ask.ask)
app.command("graph")(graph.graph)
app.command("pull")(pull.pull)
app.command("list")(models.list_models)
app.command("rm")(models.rm)
app.command("verify")(models.verify)
app.command("doctor")(doctor.doctor)
app.command("eval")(evaluate.evaluate)
app.command("serve")(serve.serve)
app.command("ps")(daemon.ps)
app.command("stop")(daemon.stop)
app.command("_daemon", hidden=True)(daemon.run_daemon)
app.add_typer(corpus.app, name="corpus")
app.add_typer(logs.app, name="logs")


def _terminate(signum, frame) -> None:
    # SIGTERM takes the path of Ctrl-C, so what a command started (pip, the
    # workers) is stopped and the cache left clean before the exit.
    raise KeyboardInterrupt


def main() -> None:
    import signal

    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _terminate)
    code = run(sys.argv[1:])
    if code == ExitCode.INTERRUPTED:
        # Ctrl-C: all that had to be written is written; finalizing torch and llama.cpp would keep the user
        # waiting another second for nothing (a stopped `complm serve` ends in half a second, not 1.5).
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        os._exit(code)
    sys.exit(code)


def run(args: list[str]) -> int:
    """The exit code of `complm ARGS`. A flag the parser refuses (`--workers 0`) is exit 2 as before, and with
    --json also the error document a script reads, as for every other error."""
    try:
        code = app(args=args, prog_name="complm", standalone_mode=False)
    except typer.Abort:
        print("Aborted!", file=sys.stderr)
        return 1
    except _PARSE_ERRORS as exc:
        if "--json" in args and hasattr(exc, "format_message"):
            print_error_document(exc.format_message(), exc.exit_code)
        from typer import rich_utils

        rich_utils.rich_format_error(exc)  # as typer shows it when it exits by itself
        return exc.exit_code
    return code if isinstance(code, int) else 0


try:  # typer >= 0.20 carries its own click, whose errors derive from TyperException
    from typer import TyperException as _TyperError

    _PARSE_ERRORS: tuple[type[Exception], ...] = (_TyperError,)
except ImportError:  # pragma: no cover - an older typer over click itself
    import click

    _PARSE_ERRORS = (click.ClickException,)
