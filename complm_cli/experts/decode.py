"""The decode thread of an engine: waiting sequences admitted into slots, one batch per step, each
sequence sampled with its own chain, and each one ended exactly once (engine.py says how and why)."""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterator

from complm_cli.errors import ModelError
from complm_cli.experts import drafts_check
from complm_cli.experts.batching import assemble
from complm_cli.experts.prefix_cache import PrefixCache
from complm_cli.experts.sampling import sampler_for
from complm_cli.experts.sequence import GenerationTimeout, Sequence, Slot


class DecodeLoop:
    """The thread that decodes the sequences of one llama_adapter.Context, and the state it keeps.

    Threads: the decode thread alone touches the context and owns `_free`, the prefix cache's fills
    and the slots' state. What other threads read or write (`_waiting`, `_tasks`, `_closed`, and
    `_active`, which `busy` reads) is changed and read under `_cond`; the model's vocabulary is used
    under it too (`_open`), so that closing never frees it in the middle of a tokenization. `steps`,
    `batched_steps` and `threads` are counters the decode thread writes, for tests and benchmarks."""

    def __init__(self, llama, *, name: str, slots: int, streams: int, n_batch: int, threads: int,
                 threads_for: Callable[[DecodeLoop], int] | None):
        self.llama, self.name, self.n_batch = llama, name, n_batch
        self.n_ctx = llama.cells // streams  # per sequence
        self._threads_for = threads_for
        self.threads = threads
        self._cond = threading.Condition()
        self._waiting: list[Sequence] = []
        self._tasks: list[tuple[Callable[[], object], queue.SimpleQueue]] = []
        self._active: dict[int, Slot] = {}
        self._free = list(range(slots))
        self._prefix = PrefixCache(llama, range(slots, streams))
        self._closed = False
        self.steps = 0  # llama_decode calls, for tests and benchmarks
        self.batched_steps = 0  # of them, steps that carried more than one sequence
        self._thread = threading.Thread(target=self._run, name=f"complm-engine-{name}", daemon=True)
        self._thread.start()

    @property
    def busy(self) -> bool:
        with self._cond:
            return bool(self._active or self._waiting)

    def _refuse_if_closed(self) -> None:
        """Under `_cond`: a closed engine's model is freed, and touching it would crash the process."""
        if self._closed:
            raise ModelError(f"The model '{self.name}' was unloaded.")

    @contextlib.contextmanager
    def _open(self) -> Iterator:
        """The loaded model, held open for the block (`close()` waits for it)."""
        with self._cond:
            self._refuse_if_closed()
            yield self.llama

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def _call(self, fn: Callable[[], object]):
        """Run `fn` on the decode thread (the only one that touches the context) and wait for it."""
        done: queue.SimpleQueue = queue.SimpleQueue()
        with self._cond:
            self._refuse_if_closed()
            self._tasks.append((fn, done))
            self._cond.notify_all()
        outcome = done.get()
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def _fail_all(self, error: ModelError) -> None:
        """The engine is closed: every sequence, task and prefix still waiting gets `error`, so that
        no caller waits forever (a set_prefix that came too late included)."""
        with self._cond:
            pending = [s.sequence for s in self._active.values()] + self._waiting
            for slot in self._active.values():
                slot.sampler.free()
            self._active.clear()
            self._waiting.clear()
            tasks, self._tasks = self._tasks, []
        for seq in pending:
            self._end(seq, error, "error")
        for _, done in tasks:
            done.put(error)
        self._prefix.end_fills(error)

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # noqa: BLE001 - no reader may wait forever on a dead thread
            broken = ModelError(f"The model '{self.name}' stopped generating ({type(exc).__name__}: {exc}).")
            with self._cond:
                self._closed = True
            self._fail_all(broken)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not (self._closed or self._tasks or self._waiting or self._active or self._prefix.fills):
                    self._cond.wait()
                if self._closed:
                    return
                tasks, self._tasks = self._tasks, []
            # Tasks (loading a prefix) before admissions: a sequence admitted now copies a prefix at the
            # next decode, and a task that then reused that prefix's stream would hand it the wrong cells.
            for fn, done in tasks:
                try:
                    done.put(fn())
                except BaseException as exc:  # noqa: BLE001 - handed to the caller
                    done.put(exc)
            with self._cond:
                while self._waiting and self._free:
                    sequence = self._waiting.pop(0)
                    try:
                        self._admit(sequence)
                    except Exception as exc:  # noqa: BLE001 - a bad request (a grammar that does not parse) fails alone
                        self._end(sequence, exc if isinstance(exc, ModelError) else ModelError(str(exc)), "error")
            self._expire()
            if self._active or self._prefix.fills:
                try:
                    self._step()
                except Exception as exc:  # noqa: BLE001 - an engine fault fails the batch, not the process
                    for slot in list(self._active.values()):
                        self._finish(slot, ModelError(f"The model '{self.name}' failed to generate ({exc})."), "error")
                    for fill in list(self._prefix.fills):
                        self._prefix.give_up(fill)  # its cells may hold part of the batch

    def _admit(self, sequence: Sequence) -> None:
        """Give a waiting sequence the lowest free slot (under `_cond`)."""
        req = sequence.request
        sampler = sampler_for(self.llama, req)  # first: a grammar that does not parse fails before it takes a slot
        # The lowest free id, and the batch in id order (batching.py says why).
        self._free.sort()
        seq_id = self._free.pop(0)
        sequence.reused = self._prefix.copy_into(seq_id, req.tokens) if req.use_prefix else 0
        self._active[seq_id] = Slot.start(seq_id, sequence, sampler, sequence.reused)

    def _expire(self) -> None:
        now = time.perf_counter()
        for slot in list(self._active.values()):
            if slot.sequence.cancelled:
                self._finish(slot, None, "cancelled")
            elif slot.deadline is not None and now > slot.deadline:
                self._finish(slot, GenerationTimeout.of(self.name, slot.sequence.request), "timeout")
        with self._cond:
            for seq in list(self._waiting):
                if seq.cancelled:
                    self._waiting.remove(seq)
                    self._end(seq, None, "cancelled")
                elif seq.request.timeout and now > seq.submitted + seq.request.timeout:
                    self._waiting.remove(seq)  # never got a slot in time
                    self._end(seq, GenerationTimeout.of(self.name, seq.request), "timeout")

    def _step(self) -> None:
        threads = self._threads_for(self) if self._threads_for else self.threads
        if threads != self.threads:
            self.llama.set_threads(threads)
            self.threads = threads
        batch = self.llama.batch
        step = assemble(batch, list(self._active.values()), self._prefix.fills[0] if self._prefix.fills else None,
                        self.n_batch, self._guess)
        if batch.n == 0:
            return
        rc = self.llama.decode(batch)
        self.steps += 1
        self.batched_steps += batch.sequences() > 1
        if rc != 0:
            # 1: no room left in the KV cache for this batch; other codes: a failed compute. Every sequence
            # with a token in the batch ends (its cells may hold part of the batch); the others go on.
            why = "its context is full" if rc == 1 else f"llama_decode returned {rc}"
            for slot in step.carried:
                self._finish(slot, ModelError(f"The model '{self.name}' failed to generate ({why}); a shorter question, "
                                              f"or a larger n_ctx in the catalog, may help."), "error")
            if step.filled:
                self._prefix.give_up(step.fill)  # not cached: prompts that start with it are evaluated whole
            return
        if step.filled:
            self._prefix.advance(step.fill, step.filled)
        for index, slot in step.wants:
            guess = step.drafts.get(slot.seq_id)
            if guess:
                self._check(slot, index, guess)
            else:
                self._sample(slot, index)

    def _guess(self, slot: Slot, batch_room: int) -> list[int]:
        def tokenize(text: str) -> list[int]:
            with self._open() as llama:
                return llama.tokenize(text, add_bos=False, special=False)

        return drafts_check.guess(slot, batch_room, self.n_ctx, tokenize)

    def _check(self, slot: Slot, index: int, guess: list[int]) -> None:
        """Keep the guess up to the first token the model would not have written, then the model's own token."""
        drafts_check.check(slot, index, guess, self._sample, self.llama)

    def _sample(self, slot: Slot, index: int) -> bool:
        """Sample the next token; False once the sequence has ended."""
        seq = slot.sequence
        token = slot.sampler.sample(index)
        if seq.first_token_s is None:
            seq.first_token_s = time.perf_counter() - seq.submitted
        if self.llama.is_eog(token):
            self._finish(slot, None, "eog")
            return False
        seq.tokens += 1
        piece, stopped = slot.out.feed(self.llama.piece(token))
        if stopped:
            self._finish(slot, None, "stop")
            return False
        if piece:
            seq.put(piece)
        if seq.tokens >= seq.request.max_tokens or slot.n_past + 1 >= self.n_ctx:
            self._finish(slot, None, "length")
            return False
        slot.last = token
        return True

    def _finish(self, slot: Slot, error: BaseException | None, reason: str) -> None:
        """End a sequence: show what is left of its text, free its cells and its slot."""
        with self._cond:
            self._active.pop(slot.seq_id, None)
        if error is None and reason != "cancelled" and slot.out.rest():
            slot.sequence.put(slot.out.rest())
        self.llama.seq_remove(slot.seq_id)
        slot.sampler.free()
        self._free.append(slot.seq_id)
        self._end(slot.sequence, error, reason)

    @staticmethod
    def _end(sequence: Sequence, error: BaseException | None, reason: str) -> None:
        sequence.end(error, reason)
