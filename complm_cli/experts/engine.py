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

from collections.abc import Callable
from pathlib import Path

from complm_cli.errors import ModelError
from complm_cli.experts.batching import PREFIX_CHUNK
from complm_cli.experts.decode import DecodeLoop
from complm_cli.experts.drafts_check import MAX_DRAFT
from complm_cli.experts.sequence import GenerationTimeout, Request, Sequence

__all__ = ["MAX_DRAFT", "PREFIXES", "PREFIX_CHUNK", "Engine", "GenerationTimeout", "Request", "Sequence",
           "default_slots"]

# Cached prefixes per engine: the planner's instructions and examples, the experts' system prompt
# (with and without the number hint), the aggregator's. Each costs one KV stream of n_ctx cells.
PREFIXES = 4


class Engine(DecodeLoop):
    """A model, one context with `slots` sequences, and the thread that decodes them (decode.py).

    Any thread may call what is here; the context itself is only ever touched by the decode thread."""

    def __init__(self, path: Path, *, n_ctx: int, slots: int, threads: int = 1, gpu_layers: int = 0,
                 n_batch: int = 512, name: str = "model", threads_for: Callable[[Engine], int] | None = None,
                 prefixes: int = PREFIXES):
        from complm_cli.experts.llama_adapter import Context

        self.path, self.slots = Path(path), slots
        # One sequence id per slot, `prefixes` more for cached prefixes, each with its own KV stream.
        self.streams = slots + prefixes
        llama = Context(self.path, n_ctx=n_ctx, streams=self.streams, n_batch=n_batch, threads=threads,
                        gpu_layers=gpu_layers)
        super().__init__(llama, name=name, slots=slots, streams=self.streams, n_batch=n_batch, threads=threads,
                         threads_for=threads_for)

    # --- what callers use ------------------------------------------------------------

    def tokenize(self, text: str, *, add_bos: bool = True) -> list[int]:
        with self._open() as llama:
            return llama.tokenize(text, add_bos=add_bos, special=True)

    def metadata(self) -> dict[str, str]:
        with self._open() as llama:
            return llama.metadata()

    def token_text(self, token: int) -> str:
        with self._open() as llama:
            return llama.token_text(token)

    def special_text(self, which: str) -> str:
        """The text of the end- ("eos") or start-of-text ("bos") token, with llama.cpp's defaults for a
        vocabulary whose file names none ("" where there is none at all)."""
        with self._open() as llama:
            token = llama.special_token(which)
            return llama.token_text(token) if token >= 0 else ""

    def submit(self, request: Request) -> Sequence:
        if len(request.tokens) >= self.n_ctx:
            raise ModelError(f"The prompt for '{self.name}' has {len(request.tokens)} tokens, more than its context of "
                             f"{self.n_ctx}; a shorter question, or a larger n_ctx in the catalog, may help.")
        sequence = Sequence(request, self._wake)
        with self._cond:
            self._refuse_if_closed()
            self._waiting.append(sequence)
            self._cond.notify_all()
        return sequence

    def set_prefix(self, tokens: list[int], state_path: Path | None = None) -> None:
        """Keep `tokens` evaluated in a prefix sequence of their own (read from `state_path` when it
        holds them); the least recently used prefix makes room when all are taken. Returns once the
        prefix is ready; the sequences already decoding go on meanwhile."""
        key = tuple(tokens)
        if self._prefix.holds(key):
            return
        ready = self._call(lambda: self._prefix.load(key, state_path))
        if ready is not None:
            outcome = ready.get()
            if isinstance(outcome, BaseException):
                raise outcome

    def forget_prefix(self) -> None:
        """Drop every cached prefix from memory (benchmarks measure planning without them)."""
        self._call(self._prefix.forget)

    @property
    def prefixes(self) -> list[list[int]]:
        """The cached prefixes, least recently used first."""
        return [list(k) for k in self._prefix.cached()]

    def close(self) -> None:
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        self._thread.join()
        gone = ModelError(f"The model '{self.name}' was unloaded while it generated.")
        self._fail_all(gone)
        self.llama.close()


def default_slots(workers: int) -> int:
    """Sequences per engine: the nodes that may run at once, plus the planner and the aggregator."""
    return max(2, min(8, workers + 2))
