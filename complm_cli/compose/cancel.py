"""Cancelling a run: an event that wakes whoever waits on it, and the exception a cancelled call raises.

A scheduler or a model pool waits on its own queue or condition, not on the
run's cancel event; `Cancel.subscribe` lets the event wake them the moment it
is set, so nobody polls. A plain `threading.Event` (from a library caller)
still works: those who wait on one fall back to a short timeout.
"""

from __future__ import annotations

import threading
from typing import Callable

from complm_cli.errors import ComplmError, ExitCode


class Cancelled(ComplmError):
    """The run was cancelled (Ctrl-C, a client that went away); not an error of the model."""

    code = ExitCode.INTERRUPTED

    def __init__(self, message: str = "interrupted."):
        super().__init__(message)


class Cancel(threading.Event):
    """A threading.Event that calls its subscribers when it is set."""

    def __init__(self) -> None:
        super().__init__()
        self._hooks: list[Callable[[], None]] = []
        self._hooks_lock = threading.Lock()

    def set(self) -> None:
        super().set()
        with self._hooks_lock:
            hooks = list(self._hooks)
        for hook in hooks:
            hook()

    def subscribe(self, hook: Callable[[], None]) -> Callable[[], None]:
        """Call `hook` when set (at once if already set); returns the unsubscribe function."""
        with self._hooks_lock:
            self._hooks.append(hook)
        if self.is_set():
            hook()

        def unsubscribe() -> None:
            with self._hooks_lock:
                if hook in self._hooks:
                    self._hooks.remove(hook)

        return unsubscribe


class AnyOf:
    """Set when any of its events is: a node stops for the run's cancel or for its own (a discarded step)."""

    def __init__(self, *events):
        self.events = events

    def is_set(self) -> bool:
        return any(e.is_set() for e in self.events)

    @property
    def wakes(self) -> bool:
        """Whether every event tells its subscribers (else a waiter must look now and then)."""
        return all(wakes(e) for e in self.events)

    def subscribe(self, hook: Callable[[], None]) -> Callable[[], None]:
        offs = [e.subscribe(hook) for e in self.events if wakes(e)]
        return lambda: [off() for off in offs] and None


def wakes(event) -> bool:
    return isinstance(event, Cancel) or (isinstance(event, AnyOf) and event.wakes)


def subscribe(event, hook: Callable[[], None]) -> Callable[[], None]:
    """`event.subscribe(hook)` where the event can tell; a no-op unsubscribe where it cannot."""
    if event is not None and (isinstance(event, Cancel) or isinstance(event, AnyOf)):
        return event.subscribe(hook)
    return lambda: None
