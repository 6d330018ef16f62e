"""llama-cpp-python's low-level API, in one place.

The engine needs what the high-level `Llama` class hides: one context with a
KV stream per sequence, a batch that mixes sequences, a sampler chain per
sequence, copies between sequences and per-sequence state on disk. That
means llama-cpp-python's `_internals` (model, context, batch) and its ctypes
bindings of the C API, which change between releases. Every such call is
here, behind small named functions, so that a new release is checked in one
file (`check_internals` lists exactly what this module uses; a test keeps the
list honest) and the rest of complm never touches ctypes.

llama_cpp is imported inside the functions: `complm --help` must not pay for
it. The C functions are looked up on the module at each call (`ll.NAME`), so
that a test or a benchmark can replace one.
"""

from __future__ import annotations

import ctypes
import functools
import re
from pathlib import Path

from complm_cli.errors import ModelError

# The versions this adapter was written and tested against (pyproject.toml pins the same range).
TESTED = "0.3.36"
SUPPORTED = ((0, 3, 36), (0, 4, 0))  # from, up to but not including

# Everything below uses from llama-cpp-python: module -> names (tests/test_llama_worker.py checks the list
# against this file's code, so a call added here without its name fails there, not on a user's machine).
NEEDS = {
    ("llama_cpp", ""): (
        "llama_model_default_params", "llama_context_default_params", "llama_n_ctx", "llama_decode",
        "llama_memory_seq_cp", "llama_memory_seq_rm", "llama_set_n_threads",
        "llama_state_seq_get_size", "llama_state_seq_get_data", "llama_state_seq_set_data",
        "llama_vocab_is_eog", "llama_vocab_eos", "llama_vocab_bos", "llama_token_to_piece",
        "llama_sampler_chain_init", "llama_sampler_chain_default_params", "llama_sampler_chain_add",
        "llama_sampler_init_grammar", "llama_sampler_init_greedy", "llama_sampler_init_top_k",
        "llama_sampler_init_top_p", "llama_sampler_init_min_p", "llama_sampler_init_temp",
        "llama_sampler_init_dist", "llama_sampler_sample", "llama_sampler_free"),
    ("llama_cpp._internals", ""): ("LlamaModel", "LlamaContext", "LlamaBatch"),
    ("llama_cpp._internals", "LlamaModel"): ("tokenize", "metadata", "token_get_text", "close"),
    ("llama_cpp._logger", ""): ("set_verbose",),
    ("llama_cpp.llama_chat_format", ""): ("Jinja2ChatFormatter",),
}
PIECE_BYTES = 256  # a token's text; a longer one (none in the catalog's vocabularies) comes out empty


def _unknown(version: str, what: str) -> ModelError:
    return ModelError(f"llama-cpp-python {version} is not a version complm knows ({what}); complm was tested with "
                      f"{TESTED}: install it with `pip install llama-cpp-python=={TESTED}`.")


def model_params(ll, gpu_layers: int):
    """llama.cpp's model parameters, with the weights left as the file has them on a CPU with AMX.

    A source build of llama-cpp-python (pip builds one where it has no wheel) compiles llama.cpp for the CPU it
    builds on, AMX kernels included; on the reference machine, a Sapphire Rapids in a sandbox, the first
    matrix product through them crashes the process (SIGSEGV in ggml_backend_amx_mul_mat), whatever the model.
    Those kernels only speed up repacked weights: without the extra buffer types the AVX-512 kernels run."""
    mparams = leave_out_amx(ll.llama_model_default_params())
    mparams.n_gpu_layers = gpu_layers
    return mparams


def leave_out_amx(mparams):
    """`mparams` (llama.cpp's model parameters), without the extra buffer types on a CPU with AMX."""
    if has_amx() and hasattr(mparams, "use_extra_bufts"):
        mparams.use_extra_bufts = False
    return mparams


@functools.cache
def has_amx() -> bool:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            return any(line.startswith("flags") and " amx_tile" in line for line in f)
    except OSError:
        return False


def version() -> str:
    import llama_cpp

    return str(getattr(llama_cpp, "__version__", "?"))


def check_llama_cpp_version() -> None:
    found = version()
    numbers = tuple(int(n) for n in re.findall(r"\d+", found)[:3])
    if not SUPPORTED[0] <= numbers < SUPPORTED[1]:
        raise _unknown(found, f"complm supports {'.'.join(map(str, SUPPORTED[0]))} up to, not including, "
                              f"{'.'.join(map(str, SUPPORTED[1]))}")


def check_internals() -> None:
    """Every name this module uses must be there: one that moved fails here with one sentence,
    not an AttributeError mid-run."""
    import importlib

    import llama_cpp

    for (module, cls), names in NEEDS.items():
        owner = importlib.import_module(module)
        owner = getattr(owner, cls) if cls else owner
        for name in names:
            if not hasattr(owner, name):
                raise _unknown(version(), f"{getattr(owner, '__name__', owner)}.{name} is missing")
    if "kv_unified" not in dict(llama_cpp.llama_context_params._fields_):
        raise _unknown(version(), "llama_context_params has no kv_unified")


def chat_formatter(template: str, *, eos: str, bos: str):
    """llama-cpp-python's Jinja chat template renderer: call it with messages= for .prompt and .stop."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    return Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos)


class Batch:
    """The tokens of one decode step: each with its position, its sequence, and whether its logits are kept."""

    def __init__(self, n_tokens: int):
        from llama_cpp import _internals

        self._owner = _internals.LlamaBatch(n_tokens=n_tokens, embd=0, n_seq_max=1, verbose=False)
        self.raw = self._owner.batch
        self.n = 0

    def clear(self) -> None:
        self.n = 0

    def add(self, token: int, pos: int, seq_id: int, logits: bool) -> None:
        raw, n = self.raw, self.n
        raw.token[n], raw.pos[n], raw.n_seq_id[n] = token, pos, 1
        raw.seq_id[n][0], raw.logits[n] = seq_id, logits
        self.n = n + 1

    def sequences(self) -> int:
        """How many sequences have a token in the batch."""
        return len({self.raw.seq_id[i][0] for i in range(self.n)})

    def close(self) -> None:
        self._owner.close()


class Sampler:
    """A llama.cpp sampler chain: samplers added in order, then `sample` (which also accepts the token)."""

    def __init__(self, context: Context):
        import llama_cpp as ll

        self._ll, self._context = ll, context
        self._chain = ll.llama_sampler_chain_init(ll.llama_sampler_chain_default_params())

    def _add(self, sampler) -> None:
        self._ll.llama_sampler_chain_add(self._chain, sampler)

    def add_grammar(self, gbnf: str) -> bool:
        """False where the grammar does not parse (root rule "root")."""
        grammar = self._ll.llama_sampler_init_grammar(self._context.vocab, gbnf.encode("utf-8"), b"root")
        if not grammar:
            return False
        self._add(grammar)
        return True

    def add_greedy(self) -> None:
        self._add(self._ll.llama_sampler_init_greedy())

    def add_top_k(self, k: int) -> None:
        self._add(self._ll.llama_sampler_init_top_k(k))

    def add_top_p(self, p: float, min_keep: int) -> None:
        self._add(self._ll.llama_sampler_init_top_p(p, min_keep))

    def add_min_p(self, p: float, min_keep: int) -> None:
        self._add(self._ll.llama_sampler_init_min_p(p, min_keep))

    def add_temp(self, temperature: float) -> None:
        self._add(self._ll.llama_sampler_init_temp(temperature))

    def add_dist(self, seed: int) -> None:
        self._add(self._ll.llama_sampler_init_dist(seed))

    def sample(self, index: int) -> int:
        """The token for the logits at batch position `index` of the last decode."""
        return self._ll.llama_sampler_sample(self._chain, self._context.ctx, index)

    def free(self) -> None:
        self._ll.llama_sampler_free(self._chain)


class Context:
    """A model file loaded into one llama.cpp context of `streams` sequences of `n_ctx` cells each."""

    def __init__(self, path: Path, *, n_ctx: int, streams: int, n_batch: int, threads: int, gpu_layers: int):
        import llama_cpp as ll
        from llama_cpp import _internals
        from llama_cpp._logger import set_verbose

        set_verbose(False)  # llama.cpp's load and context logs would land on the user's terminal
        self._ll = ll
        self.model = _internals.LlamaModel(path_model=str(path), params=model_params(ll, gpu_layers), verbose=False)
        try:
            cparams = ll.llama_context_default_params()
            # One sequence id per stream, each with its own stream of n_ctx cells. Measured on the 135M
            # model: in one unified cache, where a sequence's cells sit depends on its neighbours, which
            # changes the order of the attention sums and so, now and then, a greedy token; separate
            # streams give the same text batched as alone. A copied prefix then costs a copy of its cells.
            cparams.n_seq_max = streams
            cparams.kv_unified = False
            cparams.n_ctx = n_ctx * streams
            cparams.n_batch = cparams.n_ubatch = n_batch
            cparams.n_threads = cparams.n_threads_batch = threads
            cparams.no_perf = True
            self.context = _internals.LlamaContext(model=self.model, params=cparams, verbose=False)
        except Exception:
            self.model.close()
            raise
        self.batch = Batch(n_batch)
        self.ctx, self.memory, self.vocab = self.context.ctx, self.context.memory, self.model.vocab
        self.cells = ll.llama_n_ctx(self.ctx)  # all streams together
        self._piece = ctypes.create_string_buffer(PIECE_BYTES)

    # --- the model's vocabulary and metadata ---

    def tokenize(self, text: str, *, add_bos: bool, special: bool) -> list[int]:
        return self.model.tokenize(text.encode("utf-8"), add_bos=add_bos, special=special)

    def metadata(self) -> dict[str, str]:
        return self.model.metadata()

    def token_text(self, token: int) -> str:
        return self.model.token_get_text(token)

    def special_token(self, which: str) -> int:
        """The end- ("eos") or start-of-text ("bos") token; negative where the vocabulary names none."""
        return (self._ll.llama_vocab_eos if which == "eos" else self._ll.llama_vocab_bos)(self.vocab)

    def is_eog(self, token: int) -> bool:
        return bool(self._ll.llama_vocab_is_eog(self.vocab, token))

    def piece(self, token: int) -> bytes:
        """The token's bytes (a piece of UTF-8, not always a whole character)."""
        n = self._ll.llama_token_to_piece(self.vocab, token, self._piece, len(self._piece), 0, False)
        return self._piece.raw[: max(0, n)]

    # --- the context ---

    def set_threads(self, threads: int) -> None:
        self._ll.llama_set_n_threads(self.ctx, threads, threads)

    def sampler(self) -> Sampler:
        return Sampler(self)

    def decode(self, batch: Batch) -> int:
        """0 on success; 1: no room in the KV cache for the batch; other codes: a failed compute."""
        batch.raw.n_tokens = batch.n
        return self._ll.llama_decode(self.ctx, batch.raw)

    def seq_copy(self, source: int, target: int) -> None:
        """Copy every cell of sequence `source` into `target` (between streams, only whole sequences)."""
        self._ll.llama_memory_seq_cp(self.memory, source, target, -1, -1)

    def seq_remove(self, seq_id: int, start: int = -1) -> None:
        """Free the sequence's cells from position `start` on (-1: all of them)."""
        self._ll.llama_memory_seq_rm(self.memory, seq_id, start, -1)

    def state_get(self, seq_id: int) -> bytes:
        size = self._ll.llama_state_seq_get_size(self.ctx, seq_id)
        buf = (ctypes.c_uint8 * size)()
        written = self._ll.llama_state_seq_get_data(self.ctx, buf, size, seq_id)
        return bytes(buf[:written])

    def state_set(self, seq_id: int, data: bytes) -> bool:
        """False where llama.cpp refuses the data (damaged, or from another build or model)."""
        buf = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
        return self._ll.llama_state_seq_set_data(self.ctx, buf, len(data), seq_id) > 0

    def close(self) -> None:
        self.batch.close()
        self.context.close()
        self.model.close()
