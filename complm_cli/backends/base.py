"""The worker interface the scheduler drives: load, stream a reply, unload.

A worker is owned by one thread at a time. Keeping the interface this small
is what lets a later backend decode several nodes of one model in one batch,
or send a node to a remote server, without touching the scheduler.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator, Protocol

from complm_cli.catalog import Expert


class Worker(Protocol):
    expert: Expert
    memory: int  # bytes this worker keeps resident, for the memory budget

    def load(self) -> None: ...

    def set_threads(self, threads: int) -> None:
        """Use `threads` CPU threads from the next token on (the scheduler shares the CPU among running nodes)."""
        ...

    def stream(self, messages: list[dict], *, max_tokens: int, temperature: float, seed: int,
               threads: int, schema: dict | None = None, prefix: int = 0) -> Iterator[str]:
        """Yield the reply piece by piece (about one token each); stop early when closed.

        `prefix` counts leading messages that are the same on every call; a
        backend may keep their evaluated state to skip them next time."""
        ...

    def unload(self) -> None: ...


# (expert, model path (None for a remote expert), is another worker of the same file resident?) -> Worker
WorkerFactory = Callable[[Expert, Path | None, bool], Worker]
