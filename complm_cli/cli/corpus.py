"""`complm corpus add|list|rm`: the user's documents as knowledge experts."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer

from complm_cli.cli.common import CatalogOpt, JsonOpt, OfflineOpt, env, fail, handles_errors, load
from complm_cli.errors import ExitCode

app = typer.Typer(help="Index your own documents so `complm ask --corpus NAME` answers from them, with sources.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


@app.command("add")
@handles_errors
def add(
    name: str = typer.Argument(..., help="The corpus's name (letters, digits, '-', '_', '.')."),
    paths: list[Path] = typer.Argument(..., help=".txt, .md and .jsonl files, and folders of them (read recursively)."),
    as_json: bool = JsonOpt,
    offline: bool = OfflineOpt,
    catalog: Path = CatalogOpt,
) -> None:
    """Index files and folders into a corpus; again later, only new or changed files are read."""
    from complm_cli.cache.needs import pull_missing
    from complm_cli.cache.store import Store
    from complm_cli.cli.pull_progress import RichPullReporter
    from complm_cli.compose.knowledge import embedder_id
    from complm_cli.compose.route import Embedder
    from complm_cli.corpus import build
    from complm_cli.corpus.index import check_name

    check_name(name)
    e = env()
    settings, cat = load(catalog, offline)
    store = Store(settings)
    emb = cat.embedder
    pull_missing(store, [emb], RichPullReporter(e.err_console(), e.stderr_isatty, quiet=not e.stderr_isatty))
    embedder = Embedder(store.require(emb), emb.name)
    try:
        with _Bar(e, enabled=e.stderr_isatty and not as_json) as bar:
            report = build.add(settings.cache_dir, name, list(paths), embedder, embedder_id(cat),
                               on_start=bar.start, on_file=bar.advance)
    finally:
        embedder.close()  # a failed add (a file it cannot read, Ctrl-C) lets the model go too
    if as_json:
        print(json.dumps(report.to_dict(), indent=2), file=e.stdout)
        return
    skipped = ", ".join(f"{n} {why}" for why, n in report.skipped.items())
    print(f"{name}: {report.indexed} files indexed ({report.added} passages), {report.unchanged} unchanged"
          f"{f', {report.removed} removed' if report.removed else ''}{f'; skipped {skipped}' if skipped else ''}; "
          f"{report.passages} passages in all, {report.seconds:.1f} s.", file=e.stdout)


class _Bar:
    """A progress bar over the files on a terminal; nothing elsewhere."""

    def __init__(self, e, enabled: bool):
        self.e, self.enabled, self.progress, self.task = e, enabled, None, None

    def __enter__(self) -> "_Bar":
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.progress = Progress(TextColumn("indexing"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[file]}"),
                                     TimeElapsedColumn(), console=self.e.err_console(), transient=True)
            self.progress.__enter__()
        return self

    def start(self, files: int) -> None:
        if self.progress is not None:
            self.task = self.progress.add_task("files", total=files, file="")

    def advance(self, path: Path, passages: int) -> None:
        if self.progress is not None and self.task is not None:
            self.progress.update(self.task, advance=1, file=path.name)

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            self.progress.__exit__(*exc)


@app.command("list")
@handles_errors
def list_corpora(as_json: bool = JsonOpt) -> None:
    """The corpora in the cache: passages, files, size, embedder, last update."""
    from complm_cli.cache.config import format_size
    from complm_cli.corpus.index import info, names

    settings, _ = load()
    rows = [i for i in (info(settings.cache_dir, n) for n in names(settings.cache_dir)) if i is not None]
    e = env()
    if as_json:
        print(json.dumps([r.to_dict() for r in rows], indent=2), file=e.stdout)
        return
    if not rows:
        print("No corpora yet; add one with `complm corpus add NAME PATH...`.", file=e.stderr)
        return
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for col in ("name", "passages", "files", "size", "embedder", "updated"):
        table.add_column(col)
    for r in rows:
        table.add_row(r.name, str(r.passages), str(r.files), format_size(r.size), r.embedder,
                      time.strftime("%Y-%m-%d %H:%M", time.localtime(r.updated)))
    e.out_console().print(table)


@app.command("rm")
@handles_errors
def rm(names: list[str] = typer.Argument(..., help="Corpora to delete (their files are not touched).")) -> None:
    """Delete corpora from the cache."""
    from complm_cli.corpus.index import remove

    settings, _ = load()
    e = env()
    missing = []
    for name in names:
        if remove(settings.cache_dir, name):
            print(f"Removed corpus {name}.", file=e.stdout)
        else:
            missing.append(name)
    if missing:
        raise fail(f"No corpus named {', '.join(repr(m) for m in missing)}; `complm corpus list` shows them.", ExitCode.NOT_FOUND)
