"""The worker interface the scheduler drives: load, stream a reply, unload.

A worker is owned by one thread at a time. Keeping the interface this small
is what lets the llama.cpp backend decode several nodes of one model in one
batch (its workers are handles on one engine), or send a node to a remote
server, without touching the scheduler.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator, Protocol

from complm_cli.catalog import Expert


class Worker(Protocol):
    expert: Expert
    memory: int  # bytes this worker keeps resident, for the memory budget
    # Optional: (key, bytes) of a part several workers share (a batched engine), counted
    # once while any worker holding it is resident. Optional: `deadlines = True` when
    # stream() takes `timeout=` (seconds) and ends the reply itself when it passes.

    def load(self) -> None: ...

    def stream(self, messages: list[dict], *, max_tokens: int, temperature: float, seed: int,
               threads: int, schema: dict | None = None, prefix: int = 0) -> Iterator[str]:
        """Yield the reply piece by piece (about one token each); stop early when closed.

        The iterable may count the tokens behind the pieces in `tokens` (an int),
        where a piece can hold several; without it the pieces are counted.

        `prefix` counts leading messages that are the same on every call; a
        backend may keep their evaluated state to skip them next time."""
        ...

    def unload(self) -> None: ...


# (expert, model path (None for a remote expert)) -> Worker
WorkerFactory = Callable[[Expert, Path | None], Worker]
