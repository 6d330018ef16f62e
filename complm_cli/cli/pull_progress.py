"""Rich progress bars for pulls, one per file, on stderr: `complm pull`, and first use by `ask`, `graph`, `eval`, `serve`."""

from __future__ import annotations

import time

from complm_cli.cache.config import format_size
from complm_cli.cache.progress import PullProgress, PullReporter


class RichPullProgress(PullProgress):
    """Bars (bytes, rate, ETA) in a terminal; only a final line per model otherwise."""

    def __init__(self, console, name: str, interactive: bool, verbose: bool = False):
        self.console, self.name, self.interactive, self.verbose = console, name, interactive, verbose
        self.progress = None
        self.task = None
        self.started = time.monotonic()

    def _bars(self):
        if self.progress is None:
            from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

            self.progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                TimeRemainingColumn(), console=self.console, transient=False,
            )
            self.progress.start()
        return self.progress

    def start(self, label: str, total: int | None) -> None:
        self.started = time.monotonic()
        if not self.interactive:
            return
        bars = self._bars()
        if self.task is None:
            self.task = bars.add_task(self.name, total=total)
        else:
            bars.reset(self.task, total=total)

    def update(self, completed: int, total: int | None = None) -> None:
        if self.interactive and self.task is not None:
            self.progress.update(self.task, completed=completed, total=total)

    def note(self, message: str) -> None:
        if self.interactive and ("failed" in message or "waiting" in message):
            self.console.print(f"[yellow]{message}[/]")
        elif self.verbose:
            self.console.print(message)

    def finish(self, ok: bool, message: str) -> None:
        self.close()
        if ok:
            self.console.print(message)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    def done(self, installed) -> None:
        self.close()
        seconds = time.monotonic() - self.started
        self.console.print(f"pulled {self.name} ({format_size(installed.size)}, sha256 {installed.sha256[:12]}…) from {installed.source} in {seconds:.1f} s")


class RichPullReporter(PullReporter):
    """What `cache.needs.pull_missing` reports, drawn: which models are missing, then bars and a line per model.

    `quiet` prints neither (`ask` in a pipeline keeps stderr for errors); bars are drawn only in a terminal."""

    def __init__(self, console, interactive: bool, verbose: bool = False, quiet: bool = False):
        self.console, self.interactive, self.verbose, self.quiet = console, interactive, verbose, quiet
        self.bars: RichPullProgress | None = None

    def missing(self, experts: list) -> None:
        if not self.quiet:
            self.console.print(f"pulling {', '.join(m.name for m in experts)} (first use)")

    def progress(self, expert) -> RichPullProgress:
        self.bars = RichPullProgress(self.console, expert.name, self.interactive, self.verbose)
        return self.bars

    def pulled(self, installed) -> None:
        if not self.quiet and self.bars is not None:
            self.bars.done(installed)


def pull_all(store, experts, console, interactive: bool, force: bool = False, verbose: bool = False) -> list:
    """`complm pull`: pull each expert named (or, with `force`, again), saying what is skipped and why.

    A run pulls what it lacks through `cache.needs.pull_missing` instead."""
    reporter = RichPullReporter(console, interactive, verbose)
    results = []
    for expert in experts:
        if expert.remote is not None:
            console.print(f"{expert.name} runs on {expert.remote.api_base}; nothing to pull")
            continue
        if not force and (found := store.installed(expert)):
            console.print(f"{expert.name} is already pulled ({format_size(found.size)}); --force pulls it again")
            results.append(found)
            continue
        bars = reporter.progress(expert)
        try:
            installed = store.pull(expert, force=force, progress=bars)
        finally:
            bars.close()
        reporter.pulled(installed)
        results.append(installed)
    return results
