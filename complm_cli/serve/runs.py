"""The runs a server has in flight: each one's stop, so that a client that leaves or a shutdown stops them.

A run computes in a thread of its own and stops at its next token once its
cancel is set. The client going away sets it (a non-streamed request is
watched for that, since nothing is written to it until the end); Ctrl-C on
the server sets every one, and each client then gets an OpenAI-style error
saying the server stopped, instead of a plain-text 500 and a traceback.
"""

from __future__ import annotations

import threading
import time

from complm_cli.compose.cancel import Cancelled

SHUTTING_DOWN = "The complm server is shutting down (it was stopped); the run was cancelled."


class Runs:
    def __init__(self):
        self._lock = threading.Lock()
        self._active: set[threading.Event] = set()
        self.closing = threading.Event()
        self.last = time.monotonic()  # when a run last started or ended: how long the server has been idle

    def start(self) -> threading.Event:
        """A new run's cancel: already set when the server is shutting down."""
        cancel = threading.Event()
        with self._lock:
            self._active.add(cancel)
            self.last = time.monotonic()
            if self.closing.is_set():
                cancel.set()
        return cancel

    def end(self, cancel: threading.Event) -> None:
        with self._lock:
            self._active.discard(cancel)
            self.last = time.monotonic()

    def idle_for(self) -> float | None:
        """Seconds since the last run ended; None while one runs."""
        with self._lock:
            return None if self._active else time.monotonic() - self.last

    def close(self) -> None:
        """Stop every run: called from the signal handler, so it only sets events."""
        self.closing.set()
        with self._lock:
            for cancel in self._active:
                cancel.set()

    def why(self, exc: BaseException) -> BaseException:
        """What a run that ended with `exc` tells its client: the shutdown, where that is what cancelled it."""
        if self.closing.is_set() and isinstance(exc, Cancelled):
            from complm_cli.serve.server import ServeError

            return ServeError(SHUTTING_DOWN)
        return exc
