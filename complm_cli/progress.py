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
