"""`complm pull`: download experts into the cache."""

from __future__ import annotations

from pathlib import Path

import typer

from complm_cli.cli.common import CatalogOpt, OfflineOpt, env, handles_errors, load


@handles_errors
def pull(
    names: list[str] = typer.Argument(None, help="Experts to pull (default: the default set and the embedder)."),
    force: bool = typer.Option(False, "--force", help="Pull again even if already pulled."),
    all_: bool = typer.Option(False, "--all", help="Pull every expert in the catalog."),
    offline: bool = OfflineOpt,
    catalog: Path = CatalogOpt,
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Say which source is tried."),
) -> None:
    """Download experts: Hub first, then mirrors; size and SHA-256 checked; resumable."""
    from complm_cli.cli.pull_progress import pull_all
    from complm_cli.cache.store import Store

    settings, cat = load(catalog, offline)
    if all_:
        experts = list(cat.experts.values())
    elif names:
        experts = [cat.get(n) for n in names]
    else:
        experts = [*cat.defaults(), cat.embedder]
    e = env()
    # A remote expert is skipped, saying so, by pull_all; a tool has nothing to pull at all.
    for skipped in [x for x in experts if x.kind == "tool"]:
        print(f"{skipped.name} is a built-in tool: nothing to pull", file=e.stderr)
    experts = [x for x in experts if x.kind != "tool"]
    pull_all(Store(settings), experts, e.err_console(), e.stderr_isatty, force=force, verbose=verbose)
