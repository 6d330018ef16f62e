"""Prefixes that many prompts share, each evaluated once into a sequence of its own.

A prompt that starts with a cached prefix gets a copy of its cells, which
costs little next to evaluating it; its state is also kept on disk across
runs. A prefix not on disk yet is evaluated a chunk per step beside the
sequences that are decoding (see batching.py), so they go on writing while it
loads.

Threads: the decode thread does everything here, except `cached()` and
`holds()`, which any thread may call; the table they read is changed under a
lock.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from complm_cli.cache.config import atomic_write


@dataclass
class Fill:
    """A prefix being evaluated into its own sequence, a chunk per step."""

    tokens: tuple[int, ...]
    seq_id: int
    state_path: Path | None
    waiting: list[queue.SimpleQueue]  # the callers of set_prefix, told when it is ready (or not cached)
    pos: int = 0

    def tell(self, outcome: BaseException | None) -> None:
        """None: ready, or not cached (prompts that start with it are evaluated whole); else the error."""
        for done in self.waiting:
            done.put(outcome)


class PrefixCache:
    """Cached prefixes in sequences `seq_ids` of a llama_adapter.Context; the least recently used makes room."""

    def __init__(self, llama, seq_ids: range):
        self._llama = llama
        self._lock = threading.Lock()  # guards _ready, which other threads read
        self._ready: OrderedDict[tuple[int, ...], int] = OrderedDict()  # tokens -> their sequence id, oldest first
        self._free = list(seq_ids)
        self.fills: list[Fill] = []  # prefixes being evaluated, oldest first

    # --- any thread ---

    def cached(self) -> list[tuple[int, ...]]:
        """The cached prefixes, least recently used first."""
        with self._lock:
            return list(self._ready)

    def holds(self, tokens: tuple[int, ...]) -> bool:
        with self._lock:
            return tokens in self._ready

    # --- the decode thread ---

    def copy_into(self, seq_id: int, tokens: list[int]) -> int:
        """Copy the longest cached prefix that `tokens` go on past into `seq_id`; returns its length (0: none).
        Its last token must be evaluated for logits, and a copy between streams is of the whole sequence,
        never part of it."""
        with self._lock:
            match = max((k for k in self._ready if len(tokens) > len(k) and tuple(tokens[: len(k)]) == k),
                        key=len, default=None)
            if match is None:
                return 0
            source = self._ready[match]
            self._ready.move_to_end(match)
        self._llama.seq_copy(source, seq_id)
        return len(match)

    def load(self, tokens: tuple[int, ...], state_path: Path | None) -> queue.SimpleQueue | None:
        """Read the prefix from disk, or start evaluating it; returns where its caller hears that it is
        ready (None: ready now, or not cached)."""
        if self.holds(tokens):
            return None
        ready: queue.SimpleQueue = queue.SimpleQueue()
        for fill in self.fills:
            if fill.tokens == tokens:  # already on its way: wait with the others
                fill.waiting.append(ready)
                return ready
        with self._lock:
            if not self._free and self._ready:
                _, oldest = self._ready.popitem(last=False)
                self._free.append(oldest)
        if not self._free:
            return None
        seq_id = self._free.pop(0)
        try:
            if self._restore(tokens, seq_id, state_path):
                return None
        except BaseException:
            self._free.append(seq_id)  # an unreadable state file must not cost a prefix slot for good
            raise
        self.fills.append(Fill(tokens, seq_id, state_path, [ready]))
        return ready

    def _restore(self, tokens: tuple[int, ...], seq_id: int, state_path: Path | None) -> bool:
        """Read the prefix's state from disk into `seq_id`; False where it must be evaluated."""
        self._llama.seq_remove(seq_id)
        try:
            data = state_path.read_bytes() if state_path is not None and state_path.is_file() else b""
        except OSError:
            data = b""  # unreadable: evaluated, and written again if the folder allows
        if not data:
            return False
        if self._llama.state_set(seq_id, data):
            with self._lock:
                self._ready[tokens] = seq_id
            return True
        self._llama.seq_remove(seq_id)
        with contextlib.suppress(OSError):
            state_path.unlink()  # damaged or from another build: evaluated again
        return False

    def advance(self, fill: Fill, evaluated: int) -> None:
        """`evaluated` more tokens of the fill are in its cells; once all are, it is cached and saved."""
        fill.pos += evaluated
        if fill.pos < len(fill.tokens):
            return
        self.fills.remove(fill)
        with self._lock:
            self._ready[fill.tokens] = fill.seq_id
        self._save(fill)
        fill.tell(None)

    def _save(self, fill: Fill) -> None:
        if fill.state_path is None:
            return
        data = self._llama.state_get(fill.seq_id)
        with contextlib.suppress(OSError):
            atomic_write(fill.state_path, data)  # without it the next run only costs more time

    def give_up(self, fill: Fill) -> None:
        """Not cached (its cells may hold part of a failed batch): prompts that start with it are evaluated whole."""
        self.fills.remove(fill)
        self._llama.seq_remove(fill.seq_id)
        self._free.append(fill.seq_id)
        fill.tell(None)

    def end_fills(self, error: BaseException | None) -> None:
        """Every prefix still being evaluated is given up; its callers are told (None: not cached)."""
        fills, self.fills = self.fills, []
        for fill in fills:
            fill.tell(error)

    def forget(self) -> None:
        """Drop every cached prefix from memory."""
        with self._lock:
            seq_ids = list(self._ready.values())
            self._ready.clear()
        for seq_id in seq_ids:
            self._llama.seq_remove(seq_id)
            self._free.append(seq_id)
