"""The `complm` command: a thin Typer shell over the library.

Each command lives in its own module; importing them must stay cheap
(`complm --help` imports no ML stack).
"""

from __future__ import annotations

import os

import typer

from complm_cli import __version__
from complm_cli.cli import ask, doctor, evaluate, graph, models, pull, serve

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


app.command("ask")(ask.ask)
app.command("graph")(graph.graph)
app.command("pull")(pull.pull)
app.command("list")(models.list_models)
app.command("rm")(models.rm)
app.command("verify")(models.verify)
app.command("doctor")(doctor.doctor)
app.command("eval")(evaluate.evaluate)
app.command("serve")(serve.serve)


def _terminate(signum, frame) -> None:
    # SIGTERM takes the path of Ctrl-C, so what a command started (pip, the
    # workers) is stopped and the cache left clean before the exit.
    raise KeyboardInterrupt


def main() -> None:
    import signal

    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _terminate)
    app(prog_name="complm")
