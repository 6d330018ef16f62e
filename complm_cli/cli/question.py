"""Reading the question and preparing a run: shared by `ask` and `graph`."""

from __future__ import annotations

from pathlib import Path

from complm_cli.cli.common import Environment
from complm_cli.errors import UsageError


def read_question(arg: str | None, e: Environment) -> str:
    """From the argument, or from stdin when it is '-' or when stdin is piped."""
    if arg is None or arg == "-":
        if arg is None and e.stdin_isatty:
            raise UsageError("No question given; pass it as an argument, or pipe it on stdin.")
        text = _read_utf8(e.stdin)
    else:
        text = arg
    try:
        # Python hands undecodable argv bytes (and, under the C locale, stdin) over as lone surrogates.
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError(_NOT_UTF8) from None
    text = text.strip()
    if not text:
        raise UsageError("The question is empty; pass it as an argument, or pipe it on stdin.")
    return text


_NOT_UTF8 = "The question is not UTF-8 text; convert it (e.g. with iconv -t UTF-8) and ask again."


def _read_utf8(stream) -> str:
    """The whole stream as UTF-8, decoded here rather than by the locale's codec."""
    raw = getattr(stream, "buffer", None)
    try:
        if raw is not None:
            return raw.read().decode("utf-8-sig")
        return stream.read()
    except UnicodeDecodeError:
        raise UsageError(_NOT_UTF8) from None


def prepare(catalog: Path | None, offline: bool, expert: str | None, modes: tuple[str, ...], e: Environment,
            verbose: bool = False, monolithic: str | None = None, **overrides):
    """A Session in this process (what `eval` uses), which pulls missing models first (with bars) unless offline."""
    return session_for(catalog, offline, expert, modes, e, verbose, no_daemon=True, monolithic=monolithic, **overrides)[0]


def _reporter(e: Environment, verbose: bool):
    """Bars for the models a run pulls first; quiet when piped: then only errors go to stderr."""
    from complm_cli.cli.pull_progress import RichPullReporter

    return RichPullReporter(e.err_console(), e.stderr_isatty, verbose=verbose, quiet=not (e.stderr_isatty or verbose))


def session_for(catalog: Path | None, offline: bool, expert: str | None, modes: tuple[str, ...], e: Environment,
                verbose: bool = False, *, no_daemon: bool = False, keep_alive: str | None = None,
                monolithic: str | None = None, **overrides):
    """(what answers, its settings, its catalog): a client of the user's background server (daemon/), which
    keeps the models loaded between commands, or a Session in this process where that is off or cannot be had.

    --expert runs here: the server answers with the experts its catalog routes to."""
    from complm_cli.cli.common import load

    settings, cat = load(catalog, offline, daemon=False if no_daemon else None, keep_alive=keep_alive, **overrides)
    reporter = _reporter(e, verbose)
    if expert:
        cat.get(expert)
    elif settings.daemon:
        from complm_cli.daemon.connect import reach

        client = reach(settings, cat, e, reporter)
        if client is not None:
            return client, settings, cat
    from complm_cli.compose.session import Session  # the pipeline itself: a client of the server needs none of it

    return Session(settings, cat, expert=expert, pull_reporter=reporter, modes=modes, monolithic=monolithic), settings, cat
