"""One llama.cpp context per loaded model, decoding every active sequence in one batch.

Each request (a planner call, a node, an aggregation) becomes a sequence of
the model's one context. One thread owns the context: every step it builds
one batch from the next token of each generating sequence plus a chunk of
each new prompt, calls `llama_decode` once, and samples each sequence with
its own sampler chain (temperature, seed, grammar). A sequence joins the
batch as soon as it is submitted and leaves when it stops (end of text, a
stop string, its token budget, its deadline, or a cancel); the others never
notice (continuous batching, as llama.cpp's server does with its slots).

On a CPU the weights are read from memory once per step whatever the
number of sequences, which is where the gain over one context per node
comes from; on a GPU the gain is larger. A prefix that many prompts share
(the planner's instructions and examples, the experts' system prompt) is
evaluated once into a sequence of its own and copied into each new
sequence that starts with it, which costs little next to evaluating it; its state is also kept on disk across runs.
A prefix not on disk yet is evaluated a chunk per step beside the sequences
that are decoding, so they go on writing while it loads.

A greedy sequence may come with a drafter: a guess of the text that follows
(the planner copies the question's words into its plan). The guess goes
into the same step as the sequence's next token, and the model keeps the
longest run of it that it would have written itself, plus its own next
token (prompt-lookup decoding, checked rather than trusted). On 2 CPU
threads, 16 tokens in one step cost about 5 single steps
(bench/draft_cost.py), so a guess of a whole clause pays where it is right.
"""

from __future__ import annotations

import codecs
import contextlib
import ctypes
import queue
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from complm_cli.cache.config import atomic_write
from complm_cli.errors import ModelError


class GenerationTimeout(ModelError):
    """A sequence ran past its deadline; the other sequences go on."""


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
# Cached prefixes per engine: the planner's instructions and examples, the experts' system prompt
# (with and without the number hint), the aggregator's. Each costs one KV stream of n_ctx cells.
PREFIXES = 4
# Prefix tokens evaluated per step while other sequences decode: small enough that they wait
# little for each step (about 0.2 s on the 1.5B model, 2 CPU threads), large enough to fill it soon.
PREFIX_CHUNK = 32
# The longest guess checked in one step, so that with the sequence's own token a step holds at most 16:
# on 2 CPU threads one step of 10 to 16 tokens costs about 5 single steps, of 20 about 7 (bench/draft_cost.py).
MAX_DRAFT = 15


class Sequence:
    """A submitted request: iterate it for text pieces; `cancel()` (or closing the iteration) ends it."""

    def __init__(self, request: Request, wake: Callable[[], None]):
        self.request = request
        self._wake = wake
        self._out: "queue.SimpleQueue" = queue.SimpleQueue()
        self._cancelled = threading.Event()
        self.tokens = 0  # generated so far (a piece may hold several, or none while a stop string is pending)
        self.prompt_tokens = len(request.tokens)
        self.reused = 0  # prompt tokens copied from the cached prefix instead of evaluated
        self.drafted = 0  # guessed tokens checked, and of them the ones the model kept
        self.accepted = 0
        self.finish: str | None = None  # eog | stop | length | cancelled | timeout | error
        self.first_token_s: float | None = None
        self.submitted = time.perf_counter()

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
class _Slot:
    seq_id: int
    sequence: Sequence
    pending: list[int]  # prompt tokens still to evaluate
    n_past: int
    sampler: object
    deadline: float | None
    decoder: "codecs.IncrementalDecoder" = field(default_factory=lambda: codecs.getincrementaldecoder("utf-8")("replace"))
    text: str = ""
    emitted: int = 0
    last: int | None = None  # the token to feed next step
    drafting: bool = False


@dataclass
class _Fill:
    """A prefix being evaluated into its own sequence, a chunk per step."""

    tokens: tuple[int, ...]
    seq_id: int
    state_path: Path | None
    waiting: list["queue.SimpleQueue"]  # the callers of set_prefix, told when it is ready (or not cached)
    pos: int = 0

    def tell(self, outcome: BaseException | None) -> None:
        """None: ready, or not cached (prompts that start with it are evaluated whole); else the error."""
        for done in self.waiting:
            done.put(outcome)


def _hold_back(text: str, stops: tuple[str, ...]) -> int:
    """How many trailing characters could be the start of a stop string (not shown yet)."""
    best = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), best, -1):
            if text.endswith(stop[:k]):
                best = k
                break
    return best


class Engine:
    """A model, one context with `slots` sequences, and the thread that decodes them."""

    def __init__(self, path: Path, *, n_ctx: int, slots: int, threads: int = 1, gpu_layers: int = 0,
                 n_batch: int = 512, name: str = "model", threads_for: Callable[["Engine"], int] | None = None,
                 prefixes: int = PREFIXES):
        import llama_cpp
        from llama_cpp import _internals

        from llama_cpp._logger import set_verbose

        set_verbose(False)  # llama.cpp's load and context logs would land on the user's terminal
        self.path, self.name, self.slots, self.n_batch = Path(path), name, slots, n_batch
        self.streams = slots + prefixes
        self._threads_for = threads_for
        self.threads = threads
        mparams = llama_cpp.llama_model_default_params()
        mparams.n_gpu_layers = gpu_layers
        self.model = _internals.LlamaModel(path_model=str(path), params=mparams, verbose=False)
        try:
            cparams = llama_cpp.llama_context_default_params()
            # One sequence id per slot, `prefixes` more for cached prefixes, each with its own
            # stream of n_ctx cells. Measured on the 135M model: in one unified cache, where a
            # sequence's cells sit depends on its neighbours, which changes the order of the
            # attention sums and so, now and then, a greedy token; separate streams give the
            # same text batched as alone. A copied prefix then costs a copy of its cells.
            cparams.n_seq_max = self.streams
            cparams.kv_unified = False
            cparams.n_ctx = n_ctx * self.streams
            cparams.n_batch = cparams.n_ubatch = n_batch
            cparams.n_threads = cparams.n_threads_batch = threads
            cparams.no_perf = True
            self.context = _internals.LlamaContext(model=self.model, params=cparams, verbose=False)
        except Exception:
            self.model.close()
            raise
        self._ll = llama_cpp
        self.ctx, self.memory, self.vocab = self.context.ctx, self.context.memory, self.model.vocab
        self.n_ctx = llama_cpp.llama_n_ctx(self.ctx) // self.streams  # per sequence
        self.batch = _internals.LlamaBatch(n_tokens=n_batch, embd=0, n_seq_max=1, verbose=False)
        self._piece = ctypes.create_string_buffer(256)
        self._cond = threading.Condition()
        self._waiting: list[Sequence] = []
        self._tasks: list[tuple[Callable[[], object], "queue.SimpleQueue"]] = []
        self._active: dict[int, _Slot] = {}
        self._free = list(range(slots))
        self._prefixes: "OrderedDict[tuple[int, ...], int]" = OrderedDict()  # tokens -> their sequence id, oldest first
        self._free_prefix = list(range(slots, self.streams))
        self._fills: list[_Fill] = []  # prefixes being evaluated, oldest first
        self._closed = False
        self.steps = 0  # llama_decode calls, for tests and benchmarks
        self.batched_steps = 0  # of them, steps that carried more than one sequence
        self._thread = threading.Thread(target=self._run, name=f"complm-engine-{name}", daemon=True)
        self._thread.start()

    # --- what callers use ------------------------------------------------------------

    @property
    def busy(self) -> bool:
        return bool(self._active or self._waiting)

    def _open(self):
        if self._closed:  # the model's memory is freed: touching it would crash the process
            raise ModelError(f"The model '{self.name}' was unloaded.")
        return self.model

    def tokenize(self, text: str, *, add_bos: bool = True) -> list[int]:
        return self._open().tokenize(text.encode("utf-8"), add_bos=add_bos, special=True)

    def metadata(self) -> dict[str, str]:
        return self._open().metadata()

    def token_text(self, token: int) -> str:
        return self._open().token_get_text(token)

    def submit(self, request: Request) -> Sequence:
        if len(request.tokens) >= self.n_ctx:
            raise ModelError(f"The prompt for '{self.name}' has {len(request.tokens)} tokens, more than its context of "
                             f"{self.n_ctx}; a shorter question, or a larger n_ctx in the catalog, may help.")
        sequence = Sequence(request, self._wake)
        with self._cond:
            if self._closed:
                raise ModelError(f"The model '{self.name}' was unloaded.")
            self._waiting.append(sequence)
            self._cond.notify_all()
        return sequence

    def set_prefix(self, tokens: list[int], state_path: Path | None = None) -> None:
        """Keep `tokens` evaluated in a prefix sequence of their own (read from `state_path` when it
        holds them); the least recently used prefix makes room when all are taken. Returns once the
        prefix is ready; the sequences already decoding go on meanwhile."""
        key = tuple(tokens)
        if key in self._prefixes:
            return
        ready = self._call(lambda: self._load_prefix(key, state_path))
        if ready is not None:
            outcome = ready.get()
            if isinstance(outcome, BaseException):
                raise outcome

    def forget_prefix(self) -> None:
        """Drop every cached prefix from memory (benchmarks measure planning without them)."""
        def forget() -> None:
            for seq_id in self._prefixes.values():
                self._ll.llama_memory_seq_rm(self.memory, seq_id, -1, -1)
                self._free_prefix.append(seq_id)
            self._prefixes.clear()

        self._call(forget)

    @property
    def prefixes(self) -> list[list[int]]:
        """The cached prefixes, least recently used first."""
        return [list(k) for k in list(self._prefixes)]

    def close(self) -> None:
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        self._thread.join()
        gone = ModelError(f"The model '{self.name}' was unloaded while it generated.")
        for seq in self._drain_all():
            self._end(seq, gone, "error")
        for _, done in self._tasks:  # a set_prefix that came too late: its caller must not wait forever
            done.put(gone)
        self._tasks.clear()
        self._end_fills(gone)
        self.batch.close()
        self.context.close()
        self.model.close()

    # --- the decode thread -----------------------------------------------------------

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def _call(self, fn: Callable[[], object]):
        """Run `fn` on the decode thread (the only one that touches the context) and wait for it."""
        done: "queue.SimpleQueue" = queue.SimpleQueue()
        with self._cond:
            if self._closed:
                raise ModelError(f"The model '{self.name}' was unloaded.")
            self._tasks.append((fn, done))
            self._cond.notify_all()
        outcome = done.get()
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def _drain_all(self) -> list[Sequence]:
        with self._cond:
            pending = [s.sequence for s in self._active.values()] + self._waiting
            for slot in self._active.values():
                self._ll.llama_sampler_free(slot.sampler)
            self._active.clear()
            self._waiting.clear()
        return pending

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # noqa: BLE001 - no reader may wait forever on a dead thread
            broken = ModelError(f"The model '{self.name}' stopped generating ({type(exc).__name__}: {exc}).")
            with self._cond:
                self._closed = True
                tasks, self._tasks = self._tasks, []
            for seq in self._drain_all():
                self._end(seq, broken, "error")
            for _, done in tasks:
                done.put(broken)
            self._end_fills(broken)

    def _end_fills(self, error: BaseException | None) -> None:
        """Every prefix still being evaluated is given up; its callers are told (None: not cached)."""
        fills, self._fills = self._fills, []
        for fill in fills:
            fill.tell(error)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not (self._closed or self._tasks or self._waiting or self._active or self._fills):
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
            if self._active or self._fills:
                try:
                    self._step()
                except Exception as exc:  # noqa: BLE001 - an engine fault fails the batch, not the process
                    for slot in list(self._active.values()):
                        self._finish(slot, ModelError(f"The model '{self.name}' failed to generate ({exc})."), "error")
                    for fill in list(self._fills):
                        self._give_up(fill)  # its cells may hold part of the batch

    def _admit(self, sequence: Sequence) -> None:
        req = sequence.request
        sampler = self._sampler(req)  # first: a grammar that does not parse fails before it takes a slot
        # The lowest free id, and the batch in id order: llama.cpp splits a batch of separate KV streams
        # into runs of consecutive ids, so gaps would cost one pass over the weights per run.
        self._free.sort()
        seq_id = self._free.pop(0)
        tokens, n_past = req.tokens, 0
        # The longest cached prefix the prompt goes on past: its last token must be evaluated for
        # logits, and a copy between streams is of the whole sequence, never part of it.
        match = max((k for k in self._prefixes if len(tokens) > len(k) and tuple(tokens[: len(k)]) == k),
                    key=len, default=None) if req.use_prefix else None
        if match is not None:
            self._ll.llama_memory_seq_cp(self.memory, self._prefixes[match], seq_id, -1, -1)
            self._prefixes.move_to_end(match)
            n_past = sequence.reused = len(match)
        slot = _Slot(seq_id, sequence, list(tokens[n_past:]), n_past, sampler,
                     sequence.submitted + req.timeout if req.timeout else None,
                     drafting=req.draft is not None and req.temperature <= 0 and not req.grammar)
        self._active[seq_id] = slot

    def _sampler(self, req: Request):
        ll = self._ll
        chain = ll.llama_sampler_chain_init(ll.llama_sampler_chain_default_params())
        if req.grammar:
            grammar = ll.llama_sampler_init_grammar(self.vocab, req.grammar.encode("utf-8"), b"root")
            if not grammar:
                ll.llama_sampler_free(chain)
                raise ModelError("The grammar does not parse (GBNF, with a rule named root).")
            ll.llama_sampler_chain_add(chain, grammar)
        if req.temperature <= 0:
            ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_greedy())
        else:  # llama-cpp-python's defaults for the rest, so sampled text reads as it did through Llama
            ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_top_k(40))
            ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_top_p(0.95, 1))
            ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_min_p(0.05, 1))
            ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_temp(req.temperature))
            ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_dist(req.seed & 0xFFFFFFFF))
        return chain

    def _expire(self) -> None:
        now = time.perf_counter()
        for slot in list(self._active.values()):
            req = slot.sequence.request
            if slot.sequence.cancelled:
                self._finish(slot, None, "cancelled")
            elif slot.deadline is not None and now > slot.deadline:
                self._finish(slot, GenerationTimeout(f"'{self.name}' timed out after {req.timeout:g} s (raise --timeout to give it longer)"), "timeout")
        with self._cond:
            for seq in list(self._waiting):
                if seq.cancelled:
                    self._waiting.remove(seq)
                    self._end(seq, None, "cancelled")
                elif seq.request.timeout and now > seq.submitted + seq.request.timeout:
                    self._waiting.remove(seq)  # never got a slot in time
                    self._end(seq, GenerationTimeout(f"'{self.name}' timed out after {seq.request.timeout:g} s "
                                                     f"(raise --timeout to give it longer)"), "timeout")

    def _step(self) -> None:
        ll, batch = self._ll, self.batch.batch
        threads = self._threads_for(self) if self._threads_for else self.threads
        if threads != self.threads:
            ll.llama_set_n_threads(self.ctx, threads, threads)
            self.threads = threads
        n = 0
        wants: list[tuple[int, _Slot]] = []  # (batch index whose logits to sample, slot)
        carried: list[_Slot] = []  # every slot with a token in this batch

        def add(token: int, pos: int, seq_id: int, logits: bool) -> None:
            nonlocal n
            batch.token[n], batch.pos[n], batch.n_seq_id[n] = token, pos, 1
            batch.seq_id[n][0], batch.logits[n] = seq_id, logits
            n += 1

        ordered = sorted(self._active.values(), key=lambda slot: slot.seq_id)
        drafts: dict[int, list[int]] = {}
        later = sum(slot.last is not None for slot in ordered)  # generating sequences not in the batch yet
        for slot in ordered:  # one token for each generating sequence first: they are waited on
            if slot.last is not None:
                later -= 1
                add(slot.last, slot.n_past, slot.seq_id, True)
                slot.n_past += 1
                wants.append((n - 1, slot))
                carried.append(slot)
                guess = self._guess(slot, self.n_batch - n - later) if slot.drafting else []
                for i, token in enumerate(guess):
                    add(token, slot.n_past + i, slot.seq_id, True)
                if guess:
                    slot.n_past += len(guess)
                    drafts[slot.seq_id] = guess
        for slot in ordered:  # then prompts, in chunks, with what room is left
            if slot.last is None and slot.pending and n < self.n_batch:
                take = slot.pending[: self.n_batch - n]
                del slot.pending[: len(take)]
                for i, token in enumerate(take):
                    add(token, slot.n_past + i, slot.seq_id, not slot.pending and i == len(take) - 1)
                slot.n_past += len(take)
                carried.append(slot)
                if not slot.pending:
                    wants.append((n - 1, slot))
        fill, filled = (self._fills[0] if self._fills else None), 0
        if fill is not None and n < self.n_batch:
            # While sequences wait on this step for their next token, a small chunk; else as much as fits.
            room = min(self.n_batch - n, PREFIX_CHUNK) if wants else self.n_batch - n
            chunk = fill.tokens[fill.pos : fill.pos + room]
            for i, token in enumerate(chunk):
                add(token, fill.pos + i, fill.seq_id, False)
            filled = len(chunk)
        if n == 0:
            return
        batch.n_tokens = n
        rc = ll.llama_decode(self.ctx, batch)
        self.steps += 1
        self.batched_steps += len({batch.seq_id[i][0] for i in range(n)}) > 1
        if rc != 0:
            # 1: no room left in the KV cache for this batch; other codes: a failed compute. Every sequence
            # with a token in the batch ends (its cells may hold part of the batch); the others go on.
            why = "its context is full" if rc == 1 else f"llama_decode returned {rc}"
            for slot in carried:
                self._finish(slot, ModelError(f"The model '{self.name}' failed to generate ({why}); a shorter question, "
                                              f"or a larger n_ctx in the catalog, may help."), "error")
            if filled:
                self._give_up(fill)  # not cached: prompts that start with it are evaluated whole
            return
        if filled:
            fill.pos += filled
            if fill.pos == len(fill.tokens):
                self._fills.remove(fill)
                self._prefixes[fill.tokens] = fill.seq_id
                self._save_prefix(fill)
                fill.tell(None)
        for index, slot in wants:
            guess = drafts.get(slot.seq_id)
            if guess:
                self._check(slot, index, guess)
            else:
                self._sample(slot, index)

    def _guess(self, slot: _Slot, batch_room: int) -> list[int]:
        """The drafter's guess after the text so far, as tokens, within the budget, the context and the batch."""
        seq = slot.sequence
        room = min(MAX_DRAFT, batch_room, seq.request.max_tokens - seq.tokens - 1, self.n_ctx - slot.n_past - 2)
        if room <= 0:
            return []
        try:
            text = seq.request.draft(slot.text)
            return self._open().tokenize(text.encode("utf-8"), add_bos=False, special=False)[:room] if text else []
        except Exception:  # noqa: BLE001 - a guess only ever saves time: a drafter that fails is not asked again
            slot.drafting = False
            return []

    def _check(self, slot: _Slot, index: int, guess: list[int]) -> None:
        """Keep the guess up to the first token the model would not have written, then the model's own token."""
        start = slot.n_past - len(guess)  # the guess's first position
        kept = 0
        for i in range(len(guess) + 1):
            slot.n_past = start + i
            if not self._sample(slot, index + i):
                break  # ended (end of text, a stop, the budget): its cells are freed
            if i == len(guess) or slot.last != guess[i]:
                break
            kept += 1
        seq = slot.sequence
        seq.drafted += len(guess)
        seq.accepted += kept
        if slot.seq_id in self._active and kept < len(guess):
            self._ll.llama_memory_seq_rm(self.memory, slot.seq_id, start + kept, -1)  # the rejected rest of the guess

    def _sample(self, slot: _Slot, index: int) -> bool:
        """Sample the next token; False once the sequence has ended."""
        ll, seq = self._ll, slot.sequence
        token = ll.llama_sampler_sample(slot.sampler, self.ctx, index)
        if seq.first_token_s is None:
            seq.first_token_s = time.perf_counter() - seq.submitted
        if ll.llama_vocab_is_eog(self.vocab, token):
            self._finish(slot, None, "eog")
            return False
        seq.tokens += 1
        n = ll.llama_token_to_piece(self.vocab, token, self._piece, len(self._piece), 0, False)
        slot.text += slot.decoder.decode(self._piece.raw[: max(0, n)])
        stops = seq.request.stop
        cut = min((i for i in (slot.text.find(s, max(0, slot.emitted - len(s))) for s in stops) if i >= 0), default=-1)
        if cut >= 0:
            slot.text = slot.text[:cut]
            self._finish(slot, None, "stop")
            return False
        show = len(slot.text) - _hold_back(slot.text, stops)
        if show > slot.emitted:
            seq._out.put(slot.text[slot.emitted : show])
            slot.emitted = show
        if seq.tokens >= seq.request.max_tokens or slot.n_past + 1 >= self.n_ctx:
            self._finish(slot, None, "length")
            return False
        slot.last = token
        return True

    def _finish(self, slot: _Slot, error: BaseException | None, reason: str) -> None:
        """End a sequence: show what is left of its text, free its cells and its slot."""
        self._active.pop(slot.seq_id, None)
        if error is None and reason != "cancelled" and len(slot.text) > slot.emitted:
            slot.sequence._out.put(slot.text[slot.emitted :])
        self._ll.llama_memory_seq_rm(self.memory, slot.seq_id, -1, -1)
        self._ll.llama_sampler_free(slot.sampler)
        self._free.append(slot.seq_id)
        self._end(slot.sequence, error, reason)

    @staticmethod
    def _end(sequence: Sequence, error: BaseException | None, reason: str) -> None:
        sequence.finish = reason
        if error is not None:
            sequence._out.put(error)
        sequence._out.put(_END)

    # --- the cached prefix -------------------------------------------------------------

    def _load_prefix(self, tokens: tuple[int, ...], state_path: Path | None) -> "queue.SimpleQueue | None":
        """Read the prefix from disk, or start evaluating it; returns where its caller hears that it is
        ready (None: ready now, or not cached)."""
        if tokens in self._prefixes:
            return None
        ready: "queue.SimpleQueue" = queue.SimpleQueue()
        for fill in self._fills:
            if fill.tokens == tokens:  # already on its way: wait with the others
                fill.waiting.append(ready)
                return ready
        if not self._free_prefix and self._prefixes:
            _, oldest = self._prefixes.popitem(last=False)
            self._free_prefix.append(oldest)
        if not self._free_prefix:
            return None
        seq_id = self._free_prefix.pop(0)
        try:
            if self._restore(tokens, seq_id, state_path):
                return None
        except BaseException:
            self._free_prefix.append(seq_id)  # an unreadable state file must not cost a prefix slot for good
            raise
        self._fills.append(_Fill(tokens, seq_id, state_path, [ready]))
        return ready

    def _restore(self, tokens: tuple[int, ...], seq_id: int, state_path: Path | None) -> bool:
        """Read the prefix's state from disk into `seq_id`; False where it must be evaluated."""
        ll = self._ll
        ll.llama_memory_seq_rm(self.memory, seq_id, -1, -1)
        try:
            data = state_path.read_bytes() if state_path is not None and state_path.is_file() else b""
        except OSError:
            data = b""  # unreadable: evaluated, and written again if the folder allows
        if not data:
            return False
        buf = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
        if ll.llama_state_seq_set_data(self.ctx, buf, len(data), seq_id) > 0:
            self._prefixes[tokens] = seq_id
            return True
        ll.llama_memory_seq_rm(self.memory, seq_id, -1, -1)
        with contextlib.suppress(OSError):
            state_path.unlink()  # damaged or from another build: evaluated again
        return False

    def _give_up(self, fill: _Fill) -> None:
        self._fills.remove(fill)
        self._ll.llama_memory_seq_rm(self.memory, fill.seq_id, -1, -1)
        self._free_prefix.append(fill.seq_id)
        fill.tell(None)

    def _save_prefix(self, fill: _Fill) -> None:
        if fill.state_path is None:
            return
        ll = self._ll
        size = ll.llama_state_seq_get_size(self.ctx, fill.seq_id)
        buf = (ctypes.c_uint8 * size)()
        written = ll.llama_state_seq_get_data(self.ctx, buf, size, fill.seq_id)
        with contextlib.suppress(OSError):
            atomic_write(fill.state_path, bytes(buf[:written]))  # without it the next run only costs more time


def default_slots(workers: int) -> int:
    """Sequences per engine: the nodes that may run at once, plus the planner and the aggregator."""
    return max(2, min(8, workers + 2))

