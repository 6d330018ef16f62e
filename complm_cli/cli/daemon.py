"""`complm ps` and `complm stop`: the background server that keeps models loaded (daemon/); `_daemon` runs it."""

from __future__ import annotations

import json
import time

import typer

from complm_cli.cli.common import JsonOpt, env, handles_errors


def _place():
    from complm_cli.cache.config import load_settings
    from complm_cli.daemon.place import Place, Unavailable
    from complm_cli.errors import ComplmError

    try:
        return Place.of(load_settings())
    except Unavailable as exc:
        raise ComplmError(exc.message + ".", exc.code) from None


def _until(value, now: float) -> str:
    from complm_cli.cache.config import format_duration

    if isinstance(value, str):
        return value  # "in use", "forever"
    return "now" if value <= now + 0.5 else f"in {format_duration(value - now)}"


@handles_errors
def ps(as_json: bool = JsonOpt) -> None:
    """The background server and the models it holds: memory, GPU layers, until when they stay."""
    from complm_cli.cache.config import format_duration, format_size
    from complm_cli.daemon.connect import status

    e = env()
    state = status(_place())
    if as_json:
        print(json.dumps({"server": state}, indent=2), file=e.stdout)
        return
    if state is None:
        print("No complm server is running; the next `complm ask` starts one.", file=e.stderr)
        return
    now = time.time()
    if not state.get("options"):
        print(f"A server of {state.get('version')} is running (pid {state.get('pid')}); `complm stop` ends it.", file=e.stdout)
        return
    exits = "running a question" if state["running"] else f"exits {_until(state['exits_at'], now)} if nothing is asked"
    keep = "for as long as it runs" if state["keep_alive"] < 0 else format_duration(state["keep_alive"])
    print(f"complm server {state['version']}, pid {state['pid']}, up {format_duration(now - state['started'])}; "
          f"keeps unused models {keep}; {exits}", file=e.stdout)
    if not state["models"]:
        print("No model loaded.", file=e.stdout)
        return
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for col in ("NAME", "SIZE", "GPU LAYERS", "UNTIL"):
        table.add_column(col, justify="right" if col in ("SIZE", "GPU LAYERS") else "left")
    for m in state["models"]:
        layers = "all" if m["gpu_layers"] == -1 else str(m["gpu_layers"] or 0)
        table.add_row(m["name"], format_size(m["memory"]), layers, _until(m["until"], now))
    e.out_console().print(table)


@handles_errors
def stop() -> None:
    """Stop the background server: its models are unloaded and no process is left."""
    from complm_cli.daemon.connect import status_quietly, stop as stop_server

    e = env()
    place = _place()
    state = status_quietly(place)
    if state is None:
        print("No complm server was running.", file=e.stderr)
        return
    pid = stop_server(place, None if state.get("hung") else state)
    print(f"complm: stopped the server{f' (pid {pid})' if pid else ''}.", file=e.stderr)


@handles_errors
def run_daemon(
    settings_json: str = typer.Option(..., "--settings", help="The settings, resolved by the client, as JSON."),
    ready_fd: int = typer.Option(None, "--ready-fd", help="A pipe to write 'ready' to once it answers."),
) -> None:
    """The background server itself; `complm ask` starts it."""
    from complm_cli.cache.catalog import catalog_for
    from complm_cli.cache.config import load_settings
    from complm_cli.daemon.place import Place
    from complm_cli.daemon.run import run

    settings = load_settings(flags=json.loads(settings_json))
    run(settings, catalog_for(settings), Place.of(settings), ready_fd)
