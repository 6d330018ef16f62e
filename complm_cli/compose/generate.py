"""The one way text is generated, for every stage: planner, nodes, aggregator, monolithic.

It takes a worker from the pool, streams, and gives the worker back; it
counts the tokens (the pieces, where a backend does not count them), ends
on the cancel event with `Cancelled`, on the deadline with
`GenerationTimeout`, and where `stop` says the text is complete. A backend
that can enforce the deadline itself (the batched engine) is told it too,
so a sequence stuck in a long prompt ends on time.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable

from complm_cli.compose import prompts
from complm_cli.experts.engine import GenerationTimeout
from complm_cli.cache.catalog import Expert
from complm_cli.compose.cancel import Cancelled


@dataclass
class Generation:
    text: str
    tokens: int
    seconds: float  # from the first request to the worker to the last piece
    first_piece_s: float | None  # from the same start to the first piece
    cut: bool = False  # it ended because its token budget ran out, not because it was finished
    limit: int = 0  # that budget

    @property
    def why_cut(self) -> str | None:
        """The reason a node or a run gives for an answer that stopped at its limit; None when it did not."""
        return f"the answer stopped at its {self.limit}-token limit" if self.cut else None


@dataclass
class Params:
    max_tokens: int
    temperature: float
    seed: int = 0
    threads: int = 1
    prefix: int = 0
    timeout: float | None = None
    draft: Callable[[str], str] | None = None  # text so far -> a guess the engine checks (greedy, local engines only)


def generate(pool, expert: Expert, messages: list[dict], params: Params, *, cancel: threading.Event | None = None,
             on_piece: Callable[[str], None] | None = None, stop: Callable[[str], bool] | None = None,
             on_start: Callable[[], None] | None = None) -> Generation:
    """Generate on a worker of `expert`; `stop(text so far)` may end generation early, `on_start` runs
    once the worker is held (a node's "started")."""
    if cancel is not None and cancel.is_set():
        raise Cancelled()
    worker = pool.acquire(expert, cancel)
    try:
        start = time.perf_counter()
        if on_start is not None:
            on_start()
        deadline = start + params.timeout if params.timeout else None
        kwargs = {"prefix": params.prefix} if params.prefix else {}
        if worker.deadlines:  # the engine also sees the deadline and the cancel between steps
            kwargs["timeout"] = params.timeout
            kwargs["cancel"] = cancel
        if params.draft is not None and worker.drafts:
            kwargs["draft"] = params.draft
        stream = worker.stream(messages, max_tokens=params.max_tokens, temperature=params.temperature,
                               seed=params.seed, threads=params.threads, **kwargs)
        pieces: list[str] = []
        first = None
        stopped = False
        try:
            for piece in stream:
                pieces.append(piece)
                if first is None:
                    first = time.perf_counter() - start
                if on_piece is not None:
                    on_piece(piece)
                if cancel is not None and cancel.is_set():
                    raise Cancelled()
                if deadline is not None and time.perf_counter() > deadline:
                    raise GenerationTimeout(f"'{expert.name}' timed out after {params.timeout:g} s (raise --timeout to give it longer)")
                if stop is not None and stop("".join(pieces)):
                    stopped = True
                    break
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()  # a batched sequence leaves its batch now, not when it would have ended
        if cancel is not None and cancel.is_set():
            raise Cancelled()
        # The engine counts tokens; a piece may hold several (text held back while a stop string might start).
        tokens = getattr(stream, "tokens", None)
        count = tokens if isinstance(tokens, int) else len(pieces)
        # A stream that says why it ended (the engine's `finish`) is believed; otherwise a full budget means cut.
        finish = getattr(stream, "finish", None)
        cut = not stopped and (finish == "length" if isinstance(finish, str) else count >= params.max_tokens)
        return Generation(prompts.strip_reasoning("".join(pieces)), count, time.perf_counter() - start, first, cut,
                          params.max_tokens)
    finally:
        pool.release(worker)


def generate_text(pool, settings, expert: Expert, messages: list[dict], *, max_tokens: int, temperature: float,
                  on_token=None, cancel=None, prefix: int = 0, stop=None, draft=None, on_start=None,
                  seed: int | None = None) -> Generation:
    """The planner's, the aggregator's and the direct answer's call, with the run's settings (threads, timeout,
    and the seed unless `seed` is given)."""
    params = Params(max_tokens=max_tokens, temperature=temperature, seed=settings.seed if seed is None else seed, threads=settings.threads,
                    prefix=prefix, timeout=settings.node_timeout, draft=draft)
    return generate(pool, expert, messages, params, cancel=cancel, on_piece=on_token, stop=stop, on_start=on_start)
