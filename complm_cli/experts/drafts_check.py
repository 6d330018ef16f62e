"""Guesses checked by the model (prompt-lookup decoding): a greedy sequence's drafter guesses the text
that follows; the guess rides in the same step as the sequence's next token, and the model keeps the
longest run of it that it would have written itself, plus its own next token."""

from __future__ import annotations

from collections.abc import Callable

from complm_cli.experts.sequence import Slot

# The longest guess checked in one step, so that with the sequence's own token a step holds at most 16:
# on 2 CPU threads one step of 10 to 16 tokens costs about 5 single steps, of 20 about 7 (bench/draft_cost.py).
MAX_DRAFT = 15


def guess(slot: Slot, batch_room: int, n_ctx: int, tokenize: Callable[[str], list[int]]) -> list[int]:
    """The drafter's guess after the text so far, as tokens, within the budget, the context and the batch."""
    seq = slot.sequence
    room = min(MAX_DRAFT, batch_room, seq.request.max_tokens - seq.tokens - 1, n_ctx - slot.n_past - 2)
    if room <= 0:
        return []
    try:
        text = seq.request.draft(slot.out.text)
        return tokenize(text)[:room] if text else []
    except Exception:  # noqa: BLE001 - a guess only ever saves time: a drafter that fails is not asked again
        slot.drafting = False
        return []


def check(slot: Slot, index: int, guessed: list[int], sample: Callable[[Slot, int], bool], llama) -> None:
    """Keep the guess up to the first token the model would not have written, then the model's own token.
    `index`: the batch index of the logits before the guess; `sample(slot, index)`: False once the
    sequence has ended; `llama`: the llama_adapter.Context that holds the sequence's cells."""
    start = slot.n_past - len(guessed)  # the guess's first position
    kept, going = 0, True
    for i in range(len(guessed) + 1):
        slot.n_past = start + i
        if not sample(slot, index + i):
            going = False  # ended (end of text, a stop, the budget): its cells are freed
            break
        if i == len(guessed) or slot.last != guessed[i]:
            break
        kept += 1
    seq = slot.sequence
    seq.drafted += len(guessed)
    seq.accepted += kept
    if going and kept < len(guessed):
        llama.seq_remove(slot.seq_id, start + kept)  # the rejected rest of the guess
