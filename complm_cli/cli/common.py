"""What every command shares: the terminal environment, settings, and error handling."""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable

import typer

from complm_cli.errors import WRITE_ERRNOS, ComplmError, ExitCode, storage_error


@dataclass
class Environment:
    """stdin/stdout/stderr and whether each is a terminal; tests replace it (as httpie does)."""

    stdin: IO[str] = field(default_factory=lambda: sys.stdin)
    stdout: IO[str] = field(default_factory=lambda: sys.stdout)
    stderr: IO[str] = field(default_factory=lambda: sys.stderr)
    debug: bool = False

    @property
    def stdin_isatty(self) -> bool:
        return _isatty(self.stdin)

    @property
    def stdout_isatty(self) -> bool:
        return _isatty(self.stdout)

    @property
    def stderr_isatty(self) -> bool:
        return _isatty(self.stderr)

    def err_console(self):
        from rich.console import Console

        return Console(file=self.stderr, stderr=True, highlight=False, soft_wrap=True)

    def out_console(self):
        from rich.console import Console

        return Console(file=self.stdout, highlight=False, soft_wrap=True)


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def debug_flag() -> bool | None:
    """COMPLM_DEBUG as a boolean: None when it is set to something that is not one."""
    from complm_cli.cache.config import _FALSE, _TRUE

    value = os.environ.get("COMPLM_DEBUG", "").strip().lower()
    if value in _TRUE:
        return True
    return False if value in ("", *_FALSE) else None


def env() -> Environment:
    # Built per call: CliRunner swaps sys.stdout between invocations.
    return Environment(debug=bool(debug_flag()))


def _traceback_if_debug() -> None:
    """With --debug the traceback comes first, and the run still ends with its documented exit code."""
    e = env()
    if e.debug:
        import traceback

        traceback.print_exc(file=e.stderr)


def fail(message: str, code: ExitCode) -> typer.Exit:
    e = env()
    print(f"complm: {message}", file=e.stderr)
    return typer.Exit(int(code))


def handles_errors(func: Callable) -> Callable:
    """One sentence on stderr and a documented exit code instead of a traceback."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            result = func(*args, **kwargs)
            # Flushed here, not at exit: a stdout that cannot take the output
            # (a full device) is then one sentence and exit 10, not a traceback.
            sys.stdout.flush()
            return result
        except ComplmError as exc:
            _traceback_if_debug()
            if kwargs.get("as_json") or kwargs.get("as_jsonl"):
                # A script reading --json gets a document either way, not an empty stdout.
                print_error_document(exc.message, int(exc.code))
            raise fail(exc.message, exc.code) from None
        except KeyboardInterrupt:
            if kwargs.get("as_json") or kwargs.get("as_jsonl"):
                print_error_document("interrupted.", int(ExitCode.INTERRUPTED))
            raise fail("interrupted.", ExitCode.INTERRUPTED) from None
        except BrokenPipeError:
            # The reader went away (`complm ask ... | head -c1`): stop quietly, as Unix tools do.
            _drop_stdout()
            raise typer.Exit(int(ExitCode.OK)) from None
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except OSError as exc:
            _traceback_if_debug()
            if exc.errno not in WRITE_ERRNOS:  # EIO, a reset connection: not something the user can free up
                raise _unexpected(exc, kwargs) from None
            if exc.filename is None:  # a write to a stream: stdout, the only one complm writes much to
                _drop_stdout()
                exc.filename = "<stdout>"
            raise fail(storage_error(exc, "Cannot write").message, ExitCode.STORAGE) from None
        except Exception as exc:  # a bug: say so in one line, --debug shows where
            _traceback_if_debug()
            raise _unexpected(exc, kwargs) from None

    return wrapper


def _unexpected(exc: BaseException, kwargs: dict) -> typer.Exit:
    message = f"unexpected error: {type(exc).__name__}: {exc} (run with --debug or COMPLM_DEBUG=1 for a traceback)."
    if kwargs.get("as_json"):
        print_error_document(message, int(ExitCode.FAILURE))
    return fail(message, ExitCode.FAILURE)


def print_error_document(message: str, code: int) -> None:
    import json

    with contextlib.suppress(OSError):
        print(json.dumps({"error": {"message": message, "exit_code": code}}), file=env().stdout, flush=True)


def _drop_stdout() -> None:
    """Point stdout at /dev/null, so that flushing it at exit cannot fail a second time."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def load(catalog: Path | None = None, offline: bool | None = None, **overrides: Any):
    """Settings and catalog for a command, with its flags layered on top."""
    from complm_cli.cache.catalog import catalog_for
    from complm_cli.cache.config import load_settings

    settings = load_settings(flags=dict(catalog=catalog, offline=offline or None, **overrides))
    return settings, catalog_for(settings)


CatalogOpt = typer.Option(None, "--catalog", help="Another catalog file layered over the shipped and user catalogs (or COMPLM_CATALOG).", dir_okay=False)
OfflineOpt = typer.Option(False, "--offline", help="Never touch the network (or COMPLM_OFFLINE=1).")
JsonOpt = typer.Option(False, "--json", help="Print JSON for scripts.")
JsonlOpt = typer.Option(False, "--jsonl", help="Print each event as a JSON line as it happens, then the record (for scripts).")
QuestionArg = typer.Argument(None, help="The question; '-' or a pipe reads it from stdin.")
ExpertOpt = typer.Option(None, "--expert", "-e", help="Send every node to this expert (with --mode monolithic: the model that answers).")
WorkersOpt = typer.Option(None, "--workers", "-w", min=1, help="Nodes that may run at once (default: 4).")
ThreadsOpt = typer.Option(None, "--threads", min=1, help="CPU threads in all, divided among running nodes.")
GpuLayersOpt = typer.Option(None, "--gpu-layers", help="Layers to offload to a GPU (-1: all) where llama.cpp supports it.")
TimeoutOpt = typer.Option(None, "--timeout", help="Seconds one node may take before it fails.")
CorpusOpt = typer.Option(None, "--corpus", help="A corpus (`complm corpus add`) that steps look facts up in; "
                         "repeat for more (or COMPLM_CORPUS=a,b).")
SeedOpt = typer.Option(None, "--seed", help="Sampling seed, for repeatable runs.")
VotesOpt = typer.Option(None, "--votes", help="Plans a word problem may get, the value most of them compute "
                        "winning (default 7; 1: one plan).")
NoDaemonOpt = typer.Option(False, "--no-daemon", help="Load the models in this process, not in the background server "
                           "that keeps them loaded (or COMPLM_DAEMON=0).")
KeepAliveOpt = typer.Option(None, "--keep-alive", help="How long the background server keeps an unused model loaded "
                            "from now on, e.g. 10m or 1h (default 5m; 0: unload at once; -1: while it runs).")
ServerOpt = typer.Option(None, "--server", envvar="COMPLM_SERVER", show_envvar=True,
                         help="Use a running `complm serve` at this URL (e.g. http://127.0.0.1:8000), whose models are loaded already.")
ApiKeyOpt = typer.Option(None, "--api-key", envvar="COMPLM_SERVE_API_KEY", show_envvar=True,
                         help="With --server: the key the server was started with.")


def refuse_local_flags(flags: dict[str, Any]) -> None:
    """With --server, flags that shape how models load and run are the server's, set when it started."""
    from complm_cli.errors import UsageError

    given = [flag for flag, value in flags.items() if value is not None]
    if given:
        raise UsageError(f"{given[0]} applies where the models run: pass it to `complm serve`, or leave out --server "
                         "(and unset COMPLM_SERVER) to run the models here.")
