"""The batched engine on the real 135M model: several sequences in one context, each with
its own length, stop strings, grammar, deadline and cancel, and a cached prefix that
survives what happens to the sequences around it."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from complm_cli.experts.engine import Engine, GenerationTimeout, Request
from complm_cli.cache.catalog import load_catalog
from complm_cli.errors import ModelError

ROOT = Path(__file__).resolve().parent.parent
SYSTEM = "You are a helpful assistant. Answer briefly."
pytestmark = pytest.mark.model


def chat(question: str) -> str:
    return (f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n{question}<|im_end|>\n"
            f"<|im_start|>assistant\n")


@pytest.fixture
def engine(models):
    expert = load_catalog().get("smollm2-135m")
    e = Engine(models / "models" / expert.name / expert.file, n_ctx=2048, slots=4, threads=1, name=expert.name)
    yield e
    e.close()


def ask(engine: Engine, question: str, **kw) -> Request:
    return Request(engine.tokenize(chat(question)), **{"max_tokens": 24, **kw})


QUESTIONS = ["What is the capital of France?", "Name three colors.", "Count from one to ten in words.",
             "Why is the sky blue?"]


def test_sequences_decoded_together_give_the_text_each_gives_alone(engine):
    """Greedy decoding: batching changes the speed, never the words (different prompt and reply lengths)."""
    lengths = [4, 12, 30, 20]
    alone = ["".join(engine.submit(ask(engine, q, max_tokens=n))) for q, n in zip(QUESTIONS, lengths)]
    steps = engine.steps
    sequences = [engine.submit(ask(engine, q, max_tokens=n)) for q, n in zip(QUESTIONS, lengths)]
    together = ["".join(s) for s in sequences]
    assert together == alone
    assert all(text.strip() for text in together)
    assert [s.finish for s in sequences].count("length") >= 2 and all(s.tokens <= n for s, n in zip(sequences, lengths))
    assert engine.batched_steps > 0 and engine.steps - steps < sum(lengths)  # steps were shared


def test_a_stop_string_ends_one_sequence_and_is_never_shown(engine):
    stopped = engine.submit(ask(engine, "Count from 1 to 20, one number per line.", max_tokens=80, stop=("5",)))
    other = engine.submit(ask(engine, QUESTIONS[0], max_tokens=16))
    text = "".join(stopped)
    assert stopped.finish == "stop" and "5" not in text and "4" in text
    assert "".join(other).strip() and other.finish in ("eog", "length")


def test_each_sequence_keeps_its_own_grammar(engine):
    yes_no = 'root ::= ("yes" | "no")'
    digits = 'root ::= [0-9] [0-9]? "."'
    a = engine.submit(ask(engine, "Is the sky blue?", grammar=yes_no, max_tokens=8))
    b = engine.submit(ask(engine, "How many legs does a dog have?", grammar=digits, max_tokens=8))
    free = engine.submit(ask(engine, QUESTIONS[1], max_tokens=8))
    assert "".join(a) in ("yes", "no")
    number = "".join(b)
    assert number.endswith(".") and number[:-1].isdigit()
    assert "".join(free).strip()


def test_a_grammar_that_does_not_parse_fails_that_sequence_only(engine):
    bad = engine.submit(ask(engine, QUESTIONS[0], grammar="root ::= (", max_tokens=8))
    good = engine.submit(ask(engine, QUESTIONS[0], max_tokens=8))
    with pytest.raises(ModelError, match="grammar"):
        "".join(bad)
    assert "".join(good).strip()


def test_cancelled_and_timed_out_sequences_leave_the_others_and_the_prefix_intact(engine):
    prefix = engine.tokenize(chat("")[: chat("").index("user\n") + 5])
    engine.set_prefix(prefix)
    solo = {q: "".join(engine.submit(ask(engine, q, max_tokens=20))) for q in QUESTIONS[:2]}
    assert engine.prefixes == [prefix]

    cancelled = engine.submit(ask(engine, QUESTIONS[2], max_tokens=200))
    timed = engine.submit(ask(engine, QUESTIONS[3], max_tokens=400, timeout=0.3))
    keep = [engine.submit(ask(engine, q, max_tokens=20)) for q in QUESTIONS[:2]]
    pieces = iter(cancelled)
    next(pieces)
    cancelled.cancel()
    rest = list(pieces)  # what was decoded before the cancel reached the engine, then the end
    assert cancelled.finish == "cancelled" and cancelled.tokens < 200 and len(rest) < 50
    with pytest.raises(GenerationTimeout, match="timed out"):
        "".join(timed)
    assert ["".join(s) for s in keep] == [solo[q] for q in QUESTIONS[:2]]
    assert all(s.reused >= len(prefix) - 1 for s in keep)  # copied from the prefix, not evaluated again
    # The prefix still holds: a new sequence copies it and answers as before.
    again = engine.submit(ask(engine, QUESTIONS[0], max_tokens=20))
    assert "".join(again) == solo[QUESTIONS[0]] and again.reused > 0


def test_a_reader_that_stops_early_frees_the_slot(engine):
    slots = len(engine._free)
    sequence = engine.submit(ask(engine, QUESTIONS[2], max_tokens=200))
    for _ in sequence:
        break
    sequence.__iter__().close()
    for _ in range(100):
        if len(engine._free) == slots:
            break
        threading.Event().wait(0.05)
    assert len(engine._free) == slots and sequence.finish == "cancelled"


def test_more_requests_than_slots_wait_their_turn(engine):
    sequences = [engine.submit(ask(engine, QUESTIONS[i % 4], max_tokens=6)) for i in range(7)]
    assert all("".join(s).strip() for s in sequences)


def test_a_prompt_longer_than_the_context_is_refused_at_once(engine):
    with pytest.raises(ModelError, match="context"):
        engine.submit(Request([1] * 5000, max_tokens=4))


def test_the_prefix_state_is_saved_and_restored_across_engines(models, tmp_path):
    expert = load_catalog().get("smollm2-135m")
    path = models / "models" / expert.name / expert.file
    state = tmp_path / "prefix.seqstate"
    first = Engine(path, n_ctx=2048, slots=2, name="a")
    prefix = first.tokenize(chat("")[: chat("").index("user\n") + 5])
    first.set_prefix(prefix, state)
    built = "".join(first.submit(ask(first, QUESTIONS[0], max_tokens=12)))
    first.close()
    assert state.stat().st_size > 0
    before = state.stat().st_mtime_ns

    second = Engine(path, n_ctx=2048, slots=2, name="b")
    second.set_prefix(prefix, state)
    restored = second.submit(ask(second, QUESTIONS[0], max_tokens=12))
    assert "".join(restored) == built and restored.reused > 0
    assert state.stat().st_mtime_ns == before  # read, not written again
    second.close()

    state.write_bytes(b"not a state")  # damaged: rebuilt, and the answer is the same
    third = Engine(path, n_ctx=2048, slots=2, name="c")
    third.set_prefix(prefix, state)
    assert "".join(third.submit(ask(third, QUESTIONS[0], max_tokens=12))) == built
    assert state.stat().st_size > len(b"not a state")
    third.close()


def test_a_prefix_evaluated_cold_rides_along_with_the_sequences_that_decode(engine):
    """A prefix not on disk is evaluated a chunk per step beside the decoding sequences, which go on
    writing meanwhile (in one stretch it stopped them: about 0.4 s for an expert's system prompt on
    the 1.5B model), and their words do not change."""
    question = "Count from one to a hundred in words."
    alone = "".join(engine.submit(ask(engine, question, max_tokens=150)))
    running = engine.submit(ask(engine, question, max_tokens=150))
    pieces = iter(running)
    text = [next(pieces)]  # decoding has begun
    reader = threading.Thread(target=lambda: text.extend(pieces))
    reader.start()
    prefix = engine.tokenize(chat("Describe the history of Rome, year by year. " * 30))
    assert len(prefix) > 8 * 32
    batched = engine.batched_steps
    engine.set_prefix(prefix)
    rode_along = engine.batched_steps - batched
    reader.join()
    assert engine.prefixes[-1] == prefix and running.finish in ("eog", "length")
    assert rode_along >= 5  # chunks of the prefix shared steps with the running sequence
    assert "".join(text) == alone
    reused = engine.submit(Request(prefix + engine.tokenize("More.", add_bos=False), max_tokens=4))
    "".join(reused)
    assert reused.reused == len(prefix)  # the prefix, once ready, is copied like any other


CTRL_C_MID_BATCH = """
import os, signal, sys, threading
signal.signal(signal.SIGINT, signal.default_int_handler)  # a run started in the background inherits SIGINT ignored
from complm_cli.experts.engine import Engine, Request
e = Engine(sys.argv[1], n_ctx=2048, slots=3, name="m")
def chat(q):
    return f"<|im_start|>user\\n{q}<|im_end|>\\n<|im_start|>assistant\\n"
solo = "".join(e.submit(Request(e.tokenize(chat("Name three colors.")), max_tokens=30)))
other = e.submit(Request(e.tokenize(chat("Name three colors.")), max_tokens=30))
out = []
t = threading.Thread(target=lambda: out.append("".join(other)))
t.start()
try:
    mine = e.submit(Request(e.tokenize(chat("Count from one to a hundred.")), max_tokens=400))
    for i, piece in enumerate(mine):
        if i == 2:
            os.kill(os.getpid(), signal.SIGINT)
    print("LOST")
except KeyboardInterrupt:
    print("INTERRUPTED")
t.join()
print("SAME" if out == [solo] else "CHANGED")
print("FINISH", mine.finish)
e.close()
"""


def test_ctrl_c_in_the_middle_of_a_batch_ends_only_the_interrupted_sequence(models):
    expert = load_catalog().get("smollm2-135m")
    path = models / "models" / expert.name / expert.file
    proc = subprocess.run([sys.executable, "-c", CTRL_C_MID_BATCH, str(path)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.stdout.split() == ["INTERRUPTED", "SAME", "FINISH", "cancelled"], proc.stdout + proc.stderr[-2000:]


def test_a_failed_decode_ends_the_sequences_in_that_batch_and_the_engine_goes_on(engine, monkeypatch):
    """llama_decode failing (a full KV cache, a compute error) fails what it carried, nothing else:
    the prefix stays, and the next sequences answer as before."""
    prefix = engine.tokenize(chat("")[: chat("").index("user\n") + 5])
    engine.set_prefix(prefix)
    before = "".join(engine.submit(ask(engine, QUESTIONS[0], max_tokens=12)))

    decode, failed = engine.llama.decode, []

    def fail_once(batch):
        if not failed and batch.n == 1:  # a decode step, not a prompt
            failed.append(batch)
            return -3
        return decode(batch)

    monkeypatch.setattr(engine.llama, "decode", fail_once)
    doomed = engine.submit(ask(engine, QUESTIONS[1], max_tokens=30))
    with pytest.raises(ModelError, match="llama_decode returned -3"):
        "".join(doomed)
    assert doomed.finish == "error" and len(engine._free) == engine.slots
    again = engine.submit(ask(engine, QUESTIONS[0], max_tokens=12))
    assert "".join(again) == before and again.reused > 0  # the cached prefix survived


def test_closing_the_engine_while_sequences_run_ends_them_with_a_clear_error(models):
    expert = load_catalog().get("smollm2-135m")
    e = Engine(models / "models" / expert.name / expert.file, n_ctx=2048, slots=1, name=expert.name)
    running = e.submit(ask(e, QUESTIONS[2], max_tokens=400))
    waiting = e.submit(ask(e, QUESTIONS[3], max_tokens=400))  # one slot: this one waits
    next(iter(running))
    e.close()
    for sequence in (running, waiting):
        with pytest.raises(ModelError, match="unloaded"):
            "".join(sequence)
    with pytest.raises(ModelError, match="unloaded"):
        e.submit(Request([1, 2, 3], max_tokens=4))
    with pytest.raises(ModelError, match="unloaded"):
        e.tokenize("a freed model is never touched")


def test_several_prefixes_are_kept_and_the_least_recently_used_makes_room(models):
    """The planner's instructions, the experts' system prompt, the aggregator's: each prompt copies
    the longest cached prefix it starts with; a new prefix beyond the limit evicts the oldest."""
    expert = load_catalog().get("smollm2-135m")
    e = Engine(models / "models" / expert.name / expert.file, n_ctx=2048, slots=2, name=expert.name, prefixes=2)
    try:
        def system(text: str) -> str:
            return f"<|im_start|>system\n{text}<|im_end|>\n<|im_start|>user\n"

        def request(text: str, q: str) -> Request:
            return Request(e.tokenize(f"{system(text)}{q}<|im_end|>\n<|im_start|>assistant\n"), max_tokens=10)

        a, b, c = "You answer briefly.", "You answer in French, as a poet would.", "You answer with one number."
        plain = {t: "".join(e.submit(request(t, QUESTIONS[0]))) for t in (a, b)}
        e.set_prefix(e.tokenize(system(a)))
        e.set_prefix(e.tokenize(system(b)))
        for t in (a, b):
            seq = e.submit(request(t, QUESTIONS[0]))
            assert "".join(seq) == plain[t] and seq.reused == len(e.tokenize(system(t)))
        e.set_prefix(e.tokenize(system(c)))  # a third: `a` was used least recently and goes
        assert e.prefixes == [e.tokenize(system(b)), e.tokenize(system(c))]
        seq = e.submit(request(a, QUESTIONS[0]))
        assert "".join(seq) == plain[a] and seq.reused == 0  # evaluated whole, same words
    finally:
        e.close()


def test_a_deadline_counts_from_submission_and_a_caller_cancel_is_seen_before_any_token(models):
    """A sequence that waits for a slot times out on time; one whose caller cancels ends between steps,
    whether or not a token came, and the running one is untouched."""
    expert = load_catalog().get("smollm2-135m")
    e = Engine(models / "models" / expert.name / expert.file, n_ctx=2048, slots=1, name=expert.name)
    try:
        solo = "".join(e.submit(ask(e, QUESTIONS[0], max_tokens=60)))
        running = e.submit(ask(e, QUESTIONS[0], max_tokens=60))
        late = e.submit(ask(e, QUESTIONS[1], max_tokens=10, timeout=0.05))  # no slot until `running` ends
        stop = threading.Event()
        dropped = e.submit(Request(e.tokenize(chat(QUESTIONS[2])), max_tokens=10, cancelled=stop.is_set))
        stop.set()
        with pytest.raises(GenerationTimeout, match="timed out"):
            "".join(late)
        assert list(dropped) == [] and dropped.finish == "cancelled" and dropped.tokens == 0
        assert "".join(running) == solo
    finally:
        e.close()


def test_generation_counts_the_tokens_not_the_pieces(engine):
    """Text held back while it might start a stop string comes out later in one piece with the
    next token's text; the token count in --json and the tables must still be the model's."""
    from complm_cli.compose.generate import Params, generate
    from complm_cli.experts.base import Worker

    class Pool(Worker):
        """A pool of one worker that is itself: the engine's sequence, streamed as generate() reads it."""

        def __init__(self):
            pass

        def acquire(self, expert, cancel):
            return self

        def release(self, worker):
            pass

        def stream(self, messages, **kwargs):
            return engine.submit(ask(engine, "Count from 1 to 20, one number per line.", max_tokens=30, stop=("\n99",)))

    pieces: list[str] = []
    result = generate(Pool(), load_catalog().get("smollm2-135m"), [], Params(max_tokens=30, temperature=0.0),
                      on_piece=pieces.append)
    assert "\n" in result.text and result.tokens == 30
    assert len(pieces) < result.tokens  # every newline waited for the next token's text


# --- guesses checked by the model (prompt-lookup decoding) --------------------------


def oracle(text: str):
    """A drafter that knows the reply: it guesses the rest of `text` after what is written."""
    def guess(so_far: str) -> str:
        return text[len(so_far):] if text.startswith(so_far) else ""
    return guess


def test_a_right_guess_is_kept_and_saves_steps_without_changing_the_text(engine):
    q = QUESTIONS[3]
    alone = engine.submit(ask(engine, q, max_tokens=40))
    text = "".join(alone)
    steps = engine.steps
    drafted = engine.submit(ask(engine, q, max_tokens=40, draft=oracle(text)))
    assert "".join(drafted) == text and drafted.tokens == alone.tokens == 40 and drafted.finish == alone.finish
    assert drafted.accepted >= 30 and drafted.accepted <= drafted.drafted
    assert engine.steps - steps < alone.tokens // 3  # several tokens per step


def test_a_wrong_guess_costs_steps_never_words(engine):
    q = QUESTIONS[3]
    text = "".join(engine.submit(ask(engine, q, max_tokens=24)))
    wrong = engine.submit(ask(engine, q, max_tokens=24, draft=lambda so_far: " zebra quantum marmalade"))
    assert "".join(wrong) == text
    assert wrong.drafted > 0 and wrong.accepted < wrong.drafted


def test_guesses_stop_at_the_budget_and_at_stop_strings_as_decoding_does(engine):
    q = "Count from 1 to 20, one number per line."
    full = "".join(engine.submit(ask(engine, q, max_tokens=60)))
    for kw in ({"max_tokens": 7}, {"max_tokens": 60, "stop": ("5",)}):
        plain = engine.submit(ask(engine, q, **kw))
        guessed = engine.submit(ask(engine, q, draft=oracle(full), **kw))
        assert "".join(guessed) == "".join(plain) and guessed.finish == plain.finish and guessed.tokens == plain.tokens


def test_a_drafter_that_fails_is_dropped_and_sampled_sequences_are_never_drafted(engine):
    q = QUESTIONS[0]
    text = "".join(engine.submit(ask(engine, q)))
    calls = []

    def broken(so_far: str) -> str:
        calls.append(so_far)
        raise RuntimeError("bug in a drafter")

    assert "".join(engine.submit(ask(engine, q, draft=broken))) == text
    assert len(calls) == 1  # asked once, then never again
    sampled = engine.submit(ask(engine, q, temperature=0.8, seed=3, draft=lambda s: calls.append(s) or " x"))
    assert "".join(sampled).strip() and len(calls) == 1 and sampled.drafted == 0


def test_a_guessing_sequence_in_a_batch_leaves_the_others_words_and_its_own_alone(engine):
    alone = ["".join(engine.submit(ask(engine, q, max_tokens=20))) for q in QUESTIONS[:3]]
    guessed = engine.submit(ask(engine, QUESTIONS[0], max_tokens=20, draft=oracle(alone[0])))
    wrong = engine.submit(ask(engine, QUESTIONS[1], max_tokens=20, draft=lambda s: " purple elephants dance"))
    plain = engine.submit(ask(engine, QUESTIONS[2], max_tokens=20))
    assert ["".join(guessed), "".join(wrong), "".join(plain)] == alone
    assert guessed.accepted > 0 and wrong.drafted > 0


def test_guesses_never_overflow_a_small_batch(models):
    """The batch holds n_batch tokens: guesses of several sequences shrink to fit beside the others."""
    expert = load_catalog().get("smollm2-135m")
    small = Engine(models / "models" / expert.name / expert.file, n_ctx=2048, slots=3, threads=1, n_batch=8,
                   name=expert.name)
    try:
        q = QUESTIONS[3]
        text = "".join(small.submit(ask(small, q, max_tokens=30)))
        sequences = [small.submit(ask(small, q, max_tokens=30, draft=oracle(text))) for _ in range(3)]
        assert ["".join(s) for s in sequences] == [text] * 3
        assert all(0 < s.accepted <= s.drafted for s in sequences)
    finally:
        small.close()


# --- the engine's parts, without a model ---------------------------------------------


def test_the_stop_filter_holds_back_what_may_start_a_stop_string_and_never_shows_the_stop():
    from complm_cli.experts.stops import StopFilter

    out = StopFilter(("\nUser:",))
    shown = [out.feed(data) for data in (b"Paris", b"\n", b"Us", b"ually")]
    assert shown == [("Paris", False), ("", False), ("", False), ("\nUsually", False)]
    out = StopFilter(("\nUser:",))
    assert out.feed(b"Rome")[0] == "Rome" and out.feed(b"\nUser") == ("", False)
    assert out.feed(b":") == ("", True) and out.text == "Rome" and out.rest() == ""
    split = StopFilter(())
    euro = "\u20ac".encode()
    assert split.feed(euro[:2]) == ("", False) and split.feed(euro[2:]) == ("\u20ac", False)  # a character split across tokens


class FakeBatch:
    def __init__(self):
        self.rows: list[tuple[int, int, int, bool]] = []

    @property
    def n(self) -> int:
        return len(self.rows)

    def clear(self) -> None:
        self.rows.clear()

    def add(self, token: int, pos: int, seq_id: int, logits: bool) -> None:
        self.rows.append((token, pos, seq_id, logits))


def slot(seq_id: int, *, last: int | None = None, pending=(), n_past: int = 0, drafting: bool = False):
    from complm_cli.experts.sequence import Sequence, Slot
    from complm_cli.experts.stops import StopFilter

    sequence = Sequence(Request([0] * n_past + list(pending), max_tokens=50), lambda: None)
    return Slot(seq_id, sequence, list(pending), n_past, None, None, StopFilter(()), last=last, drafting=drafting)


def test_a_step_puts_generating_sequences_first_in_id_order_then_prompts_then_a_prefix_chunk():
    from complm_cli.experts.batching import PREFIX_CHUNK, assemble
    from complm_cli.experts.prefix_cache import Fill

    batch = FakeBatch()
    prompt, gen_b, gen_a = slot(0, pending=[7, 8, 9]), slot(3, last=42, n_past=5, drafting=True), slot(1, last=41, n_past=9)
    fill = Fill(tuple(range(100)), seq_id=6, state_path=None, waiting=[])
    rooms: list[int] = []
    step = assemble(batch, [prompt, gen_b, gen_a], fill, 64, lambda s, room: rooms.append(room) or [50, 51])
    assert rooms == [62]  # what the batch holds beside the tokens already in it and those still to come
    assert batch.rows[:5] == [(41, 9, 1, True), (42, 5, 3, True), (50, 6, 3, True), (51, 7, 3, True), (7, 0, 0, False)]
    assert batch.rows[6] == (9, 2, 0, True)  # the prompt's last token: its logits start the reply
    assert [(i, s.seq_id) for i, s in step.wants] == [(0, 1), (1, 3), (6, 0)] and step.drafts == {3: [50, 51]}
    assert step.fill is fill and step.filled == PREFIX_CHUNK  # sequences wait on this step: a small chunk
    assert [r[2] for r in batch.rows[7:]] == [6] * PREFIX_CHUNK and (gen_a.n_past, gen_b.n_past) == (10, 8)
    alone = assemble(batch, [], fill, 64, lambda s, room: [])
    assert alone.filled == 64 and batch.n == 64  # nobody waits: as much as fits


def test_a_guess_is_kept_up_to_the_first_token_the_model_would_not_write():
    from complm_cli.experts import drafts_check

    class Llama:
        def __init__(self):
            self.removed: list[tuple[int, int]] = []

        def seq_remove(self, seq_id, start=-1):
            self.removed.append((seq_id, start))

    model = iter([10, 11, 99])  # the model's own tokens at each position

    def sample(s, index):
        s.last = next(model)
        return True

    s = slot(2, last=5, n_past=11)  # its token at 7, then a guess of 3 at 8 to 10, are in the batch
    llama = Llama()
    drafts_check.check(s, 0, [10, 11, 12], sample, llama)
    # Two guessed tokens kept (at 8 and 9); the model's own 99 goes in at 10 next step.
    assert (s.sequence.drafted, s.sequence.accepted, s.last, s.n_past) == (3, 2, 99, 10)
    assert llama.removed == [(2, 10)]  # the rejected rest of the guess leaves the cache
