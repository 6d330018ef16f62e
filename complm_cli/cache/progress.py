"""How long-running core work reports progress without knowing who listens.

The core calls these methods; the CLI passes an object that draws Rich bars,
tests pass a recorder, and library callers get the silent default.
"""

from __future__ import annotations


class PullProgress:
    """Progress of one model file being pulled. The default does nothing."""

    def start(self, label: str, total: int | None) -> None:
        """A new file (or a new attempt from another source) begins."""

    def update(self, completed: int, total: int | None = None) -> None:
        """`completed` bytes of `total` so far."""

    def note(self, message: str) -> None:
        """A one-line remark: a source failed and the next is tried, waiting for a lock, ..."""

    def finish(self, ok: bool, message: str) -> None:
        """The file is pulled (ok) or given up on."""

    def close(self) -> None:
        """No more calls come: the pull is over, done, failed or interrupted (the caller says so, not the store)."""


class PullReporter:
    """Progress of pulling the models a run lacks, one `PullProgress` per model. The default does nothing."""

    def missing(self, experts: list) -> None:
        """These models are not in the cache and are pulled next, in this order (never called with none)."""

    def progress(self, expert) -> PullProgress:
        """What follows the pull of one model."""
        return PullProgress()

    def pulled(self, installed) -> None:
        """A model is in the cache now (`installed` is what `Store.pull` returned)."""
