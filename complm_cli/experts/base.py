"""The worker contract the pool and the generation path drive: load, stream a reply, unload.

Every expert kind that answers with text (llama.cpp in this process, a remote
OpenAI-compatible server, a kind from a plugin) gives workers of this class.
What a worker can do beyond streaming is declared on the class, never probed:

- `deadlines`: `stream()` takes `timeout` (seconds) and `cancel` and ends the
  reply itself between steps (a batched engine, where a sequence stuck in a long
  prompt would otherwise not notice);
- `drafts`: `stream()` takes `draft`, a guess of the text that follows, which the
  model checks (greedy decoding on a local engine);
- `memory` and `shared`: the bytes the worker keeps resident, and a part several
  workers share (an engine), counted once while any holder is resident;
- a worker whose expert has an endpoint (`expert.remote`) is limited by that
  endpoint's capacity instead.

A worker is owned by one thread at a time.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Callable, ClassVar, Iterator

from complm_cli.cache.catalog import Expert


class Worker(ABC):
    deadlines: ClassVar[bool] = False
    drafts: ClassVar[bool] = False
    memory: int = 0
    shared: tuple[str, int] | None = None
    gpu_layers: int | None = None  # layers offloaded to a GPU, where the worker runs a model here (`complm ps`)

    def __init__(self, expert: Expert):
        self.expert = expert

    def load(self) -> None:
        """Make the worker ready (load the model); the pool calls it once, outside its lock."""

    @abstractmethod
    def stream(self, messages: list[dict], *, max_tokens: int, temperature: float, seed: int, threads: int,
               prefix: int = 0, **capabilities) -> Iterator[str]:
        """Yield the reply piece by piece (about one token each); stop early when closed.

        The iterable may say why it ended in `finish` ("length": its token budget ran out, so the
        answer is cut; "stop", "eog": it was finished); without it, a reply of `max_tokens` counts as cut.
        The iterable may count the tokens behind the pieces in `tokens` (an int),
        where a piece can hold several; without it the pieces are counted.
        `prefix` counts leading messages that are the same on every call; a
        backend may keep their evaluated state to skip them next time.
        `capabilities` holds only what the class declares (timeout and cancel, draft)."""

    def unload(self) -> None:
        """Free what `load` took; the worker may be loaded again later."""


# (expert, model path (None for a remote expert or a tool)) -> Worker
WorkerFactory = Callable[[Expert, Path | None], Worker]
