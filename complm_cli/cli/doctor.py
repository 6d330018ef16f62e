"""`complm doctor`: what complm sees of this machine."""

from __future__ import annotations

import json
import platform
import sys
from importlib import metadata
from pathlib import Path

from complm_cli.cli.common import CatalogOpt, JsonOpt, env, handles_errors, load


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _llama_build() -> dict:
    try:
        import llama_cpp
    except Exception as exc:  # a broken build is what doctor is for
        return {"importable": False, "error": f"{type(exc).__name__}: {exc}"}
    info = {"importable": True, "gpu_offload": bool(llama_cpp.llama_supports_gpu_offload())}
    try:
        info["system_info"] = llama_cpp.llama_print_system_info().decode(errors="replace").strip()
    except Exception:
        pass
    return info


def _probe_all(experts: list) -> list[dict]:
    """Every endpoint at once, so a few slow ones still take seconds, not their sum."""
    if not experts:
        return []
    from concurrent.futures import ThreadPoolExecutor

    from complm_cli.experts.remote import probe

    with ThreadPoolExecutor(max_workers=min(8, len(experts))) as pool:
        return list(pool.map(probe, experts))


def _background(settings) -> dict:
    """The user's background server (daemon/): off, not running, or what it is and holds."""
    from complm_cli.daemon.connect import status
    from complm_cli.daemon.place import Place, Unavailable

    if not settings.daemon:
        return {"on": False, "running": False, "message": "off (daemon = false or COMPLM_DAEMON=0): models load in each command"}
    try:
        place = Place.of(settings)
        state = status(place)
    except Unavailable as exc:
        return {"on": True, "running": False, "message": exc.message}
    if state is None:
        return {"on": True, "running": False, "socket": str(place.socket), "message": "not running; the next `complm ask` starts one"}
    models = ", ".join(m["name"] for m in state.get("models") or []) or "no model loaded"
    return {"on": True, "running": True, "socket": str(place.socket), "pid": state.get("pid"), "version": state.get("version"),
            "message": f"pid {state.get('pid')}, complm {state.get('version')}, {models} (`complm ps`)"}


def _server() -> dict | None:
    """The server `ask --server` would use by default (COMPLM_SERVER), and whether it answers."""
    import os

    from complm_cli.serve.client import ServerClient
    from complm_cli.errors import UsageError

    url = os.environ.get("COMPLM_SERVER", "").strip()
    if not url:
        return None
    try:
        return ServerClient(url, os.environ.get("COMPLM_SERVE_API_KEY") or None).probe()
    except UsageError as exc:  # not a URL
        return {"url": url, "answers": False, "message": exc.message}


@handles_errors
def doctor(as_json: bool = JsonOpt, catalog: Path = CatalogOpt) -> None:
    """Versions, paths, catalog files, CPU threads, GPU offload, and what is pulled."""
    from rich.markup import escape

    from complm_cli.cache.config import format_size, total_ram_bytes
    from complm_cli.cache.store import Store

    from complm_cli import runlog
    from complm_cli.experts.waiting import settle

    waiting = settle()  # before _llama_build loads llama.cpp, as a run would
    settings, cat = load(catalog)
    store = Store(settings)
    report = {
        "complm": _version("complm"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": {d: _version(d) for d in ("llama-cpp-python", "sentence-transformers", "torch", "huggingface-hub", "typer", "rich", "networkx", "openai", "starlette", "uvicorn")},
        "cache_dir": str(settings.cache_dir),
        "run_log": {"path": str(runlog.path(settings)), "on": runlog.is_on(settings)},
        "config_file": str(settings.config_file),
        "config_file_exists": settings.config_file.is_file(),
        "user_catalog": str(settings.user_catalog),
        "catalog_files": [str(f) for f in cat.files],
        "cpu_threads": settings.threads,
        "thread_waiting": waiting,
        "workers": settings.worker_count(),
        "ram": total_ram_bytes(),
        "memory_budget": settings.memory_budget(),
        "gpu_layers": settings.gpu_layers,
        "offline": settings.offline,
        "llama_cpp": _llama_build(),
        "embedder": {"name": cat.embedder.name, "pulled": store.is_pulled(cat.embedder)},
        "pulled": [e.name for e in cat.experts.values() if e.remote is None and store.is_pulled(e)],
        "missing_defaults": [e.name for e in [*cat.defaults(), cat.embedder] if e.remote is None and not store.is_pulled(e)],
        "remote": _probe_all([x for x in cat.experts.values() if x.remote is not None]),
        "server": _server(),
        "background_server": _background(settings),
    }
    e = env()
    if as_json:
        print(json.dumps(report, indent=2), file=e.stdout)
        return
    console = e.out_console()
    llama = report["llama_cpp"]
    lines = [
        ("complm", f"{report['complm']} on Python {report['python']} ({report['platform']})"),
        *((name, ver or "[red]not installed[/]") for name, ver in report["packages"].items()),
        ("cache", report["cache_dir"]),
        ("run log", report["run_log"]["path"] + ("" if report["run_log"]["on"] else " (off)")),
        ("config file", report["config_file"] + ("" if report["config_file_exists"] else " (none)")),
        ("user catalog", report["user_catalog"]),
        ("catalogs in use", ", ".join(report["catalog_files"])),
        ("CPU threads", f"{report['cpu_threads']} (workers {report['workers']}); at a barrier they {report['thread_waiting']}"),
        ("memory", f"{format_size(report['ram'])} RAM, model budget {format_size(report['memory_budget'])}"),
        ("llama.cpp", ("GPU offload: " + ("yes" if llama.get("gpu_offload") else "no (CPU build)")) if llama["importable"] else f"[red]cannot import: {llama['error']}[/]"),
        ("embedder", f"{report['embedder']['name']} ({'pulled' if report['embedder']['pulled'] else 'not pulled'})"),
        ("pulled", ", ".join(report["pulled"]) or "nothing"),
        ("server", escape(report["background_server"]["message"])),
    ]
    for r in report["remote"]:
        color = "green" if r["served"] else ("yellow" if r["reachable"] else "red")
        lines.append((r["name"], f"{r['api_base']}: [{color}]{escape(r['message'])}[/]"))
    server = report["server"]
    if server is not None:
        lines.append(("COMPLM_SERVER", f"{server['url']}: [{'green' if server['answers'] else 'red'}]{escape(server['message'])}[/]"))
    for key, value in lines:
        console.print(f"[bold]{key:>16}[/]  {value}")
    if report["missing_defaults"]:
        console.print(f"[yellow]run `complm pull` to fetch: {', '.join(report['missing_defaults'])}[/]")
