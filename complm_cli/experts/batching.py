"""One decode step's batch: what goes in, in which order, and whose logits are sampled after it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from complm_cli.experts.prefix_cache import Fill
from complm_cli.experts.sequence import Slot

# Prefix tokens evaluated per step while other sequences decode: small enough that they wait
# little for each step (about 0.2 s on the 1.5B model, 2 CPU threads), large enough to fill it soon.
PREFIX_CHUNK = 32


@dataclass
class Step:
    wants: list[tuple[int, Slot]] = field(default_factory=list)  # (batch index whose logits to sample, slot)
    carried: list[Slot] = field(default_factory=list)  # every slot with a token in this batch
    drafts: dict[int, list[int]] = field(default_factory=dict)  # seq_id -> the guess that follows its token
    fill: Fill | None = None  # the prefix with a chunk in this batch, and how many tokens of it
    filled: int = 0


def assemble(batch, slots: list[Slot], fill: Fill | None, n_batch: int,
             guess: Callable[[Slot, int], list[int]]) -> Step:
    """Fill `batch` (a llama_adapter.Batch of `n_batch` tokens) for one step: the next token of each
    generating sequence with its guess, then prompt chunks, then a chunk of the prefix `fill`.
    `guess(slot, room)` gives a drafting slot's guess in at most `room` tokens."""
    batch.clear()
    step = Step()
    # In seq_id order: llama.cpp splits a batch of separate KV streams into runs of consecutive ids,
    # so gaps would cost one pass over the weights per run.
    ordered = sorted(slots, key=lambda slot: slot.seq_id)
    later = sum(slot.last is not None for slot in ordered)  # generating sequences not in the batch yet
    for slot in ordered:  # one token for each generating sequence first: they are waited on
        if slot.last is not None:
            later -= 1
            batch.add(slot.last, slot.n_past, slot.seq_id, True)
            slot.n_past += 1
            step.wants.append((batch.n - 1, slot))
            step.carried.append(slot)
            guessed = guess(slot, n_batch - batch.n - later) if slot.drafting else []
            for i, token in enumerate(guessed):
                batch.add(token, slot.n_past + i, slot.seq_id, True)
            if guessed:
                slot.n_past += len(guessed)
                step.drafts[slot.seq_id] = guessed
    for slot in ordered:  # then prompts, in chunks, with what room is left
        if slot.last is None and slot.pending and batch.n < n_batch:
            take = slot.pending[: n_batch - batch.n]
            del slot.pending[: len(take)]
            for i, token in enumerate(take):
                batch.add(token, slot.n_past + i, slot.seq_id, not slot.pending and i == len(take) - 1)
            slot.n_past += len(take)
            step.carried.append(slot)
            if not slot.pending:
                step.wants.append((batch.n - 1, slot))
    if fill is not None and batch.n < n_batch:
        # While sequences wait on this step for their next token, a small chunk; else as much as fits.
        room = min(n_batch - batch.n, PREFIX_CHUNK) if step.wants else n_batch - batch.n
        chunk = fill.tokens[fill.pos : fill.pos + room]
        for i, token in enumerate(chunk):
            batch.add(token, fill.pos + i, fill.seq_id, False)
        step.fill, step.filled = fill, len(chunk)
    return step
