"""A request to the engine, the sequence its caller reads, and the slot that decodes it.

Threads: a `Sequence` is read by its caller's thread and written by the
engine's decode thread. They meet in its queue (pieces, then an error or the
end) and its cancel event; its counters (`tokens`, `reused`, `drafted`,
`accepted`, `finish`, `first_token_s`) are written by the decode thread only
and are final once the iteration has ended. A `Slot` belongs to the decode
thread alone.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from complm_cli.errors import ModelError
from complm_cli.experts.stops import StopFilter


class GenerationTimeout(ModelError):
    """A sequence ran past its deadline; the other sequences go on."""

    @classmethod
    def of(cls, name: str, request: Request) -> GenerationTimeout:
        return cls(f"'{name}' timed out after {request.timeout:g} s (raise --timeout to give it longer)")


@dataclass
class Request:
    tokens: list[int]
    max_tokens: int
    temperature: float = 0.0
    seed: int = 0
    grammar: str | None = None  # GBNF, root rule "root"
    stop: tuple[str, ...] = ()
    timeout: float | None = None  # seconds from submission, waiting for a slot included
    use_prefix: bool = True  # copy the engine's cached prefix where the prompt starts with it
    cancelled: Callable[[], bool] | None = None  # the caller's cancel (Ctrl-C), seen between steps even before a token
    # Greedy sequences only: text so far -> a guess of the text that follows ("" for none), checked by the model.
    draft: Callable[[str], str] | None = None


_END = object()


class Sequence:
    """A submitted request: iterate it for text pieces; `cancel()` (or closing the iteration) ends it."""

    def __init__(self, request: Request, wake: Callable[[], None]):
        self.request = request
        self._wake = wake
        self._out: queue.SimpleQueue = queue.SimpleQueue()
        self._cancelled = threading.Event()
        self.tokens = 0  # generated so far (a piece may hold several, or none while a stop string is pending)
        self.prompt_tokens = len(request.tokens)
        self.reused = 0  # prompt tokens copied from the cached prefix instead of evaluated
        self.drafted = 0  # guessed tokens checked, and of them the ones the model kept
        self.accepted = 0
        self.finish: str | None = None  # eog | stop | length | cancelled | timeout | error
        self.first_token_s: float | None = None
        self.submitted = time.perf_counter()

    # --- the decode thread's side ---

    def put(self, piece: str) -> None:
        """Hand the reader a piece of text."""
        self._out.put(piece)

    def end(self, error: BaseException | None, reason: str) -> None:
        """No more pieces: the reader gets `error` (if any), then the end of the iteration."""
        self.finish = reason
        if error is not None:
            self._out.put(error)
        self._out.put(_END)

    # --- the reader's side ---

    def cancel(self) -> None:
        self._cancelled.set()
        self._wake()

    def close(self) -> None:
        """The reader is done: an unfinished sequence leaves its batch now."""
        if self.finish is None:
            self.cancel()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set() or bool(self.request.cancelled and self.request.cancelled())

    def __iter__(self) -> Iterator[str]:
        try:
            while True:
                try:
                    item = self._out.get(timeout=0.2)  # a bounded wait keeps Ctrl-C prompt in the reading thread
                except queue.Empty:
                    continue
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            if self.finish is None:
                self.cancel()  # the reader stopped early: free the slot


@dataclass
class Slot:
    """A sequence being decoded: its stream of cells (`seq_id`) and where it stands."""

    seq_id: int
    sequence: Sequence
    pending: list[int]  # prompt tokens still to evaluate
    n_past: int
    sampler: object  # llama_adapter.Sampler
    deadline: float | None
    out: StopFilter
    last: int | None = None  # the token to feed next step
    drafting: bool = False

    @classmethod
    def start(cls, seq_id: int, sequence: Sequence, sampler: object, reused: int) -> Slot:
        """The slot of a sequence admitted now, its first `reused` prompt tokens copied from a prefix."""
        req = sequence.request
        return cls(seq_id, sequence, list(req.tokens[reused:]), reused, sampler,
                   sequence.submitted + req.timeout if req.timeout else None, StopFilter(req.stop),
                   drafting=req.draft is not None and req.temperature <= 0 and not req.grammar)
