"""In-process llama.cpp workers (llama-cpp-python): one Llama per worker."""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import os
import re
import signal
import threading
from pathlib import Path
from typing import Iterator

from complm_cli.catalog import Expert
from complm_cli.config import atomic_write
from complm_cli.errors import ModelError


def estimate_memory(expert: Expert, path: Path, shares_weights: bool) -> int:
    """Resident bytes: the weights (mmap, shared by workers over one file) plus what each Llama adds.

    Measured with llama-cpp-python 0.3.36 on the CPU: a second Llama over the
    1.5B file added 0.78 GB of anonymous memory (KV cache, compute and logits
    buffers, repacked tensors), over the 0.5B file 0.13 GB; 0.6 of the file
    size per context at n_ctx 4096 errs on the safe side for both."""
    try:
        weights = path.stat().st_size
    except OSError:
        weights = expert.size or 0
    context = int(weights * 0.6 * expert.generation.n_ctx / 4096) + 64 * 1024 * 1024
    return context + (0 if shares_weights else weights)


# --- llama-cpp-python's internals, in one place --------------------------------------

# The versions the adapter below was written and tested against (pyproject.toml pins the same range).
TESTED = "0.3.36"
SUPPORTED = ((0, 3, 36), (0, 4, 0))  # from, up to but not including


def _unknown(version: str, what: str) -> ModelError:
    return ModelError(f"llama-cpp-python {version} is not a version complm knows ({what}); complm was tested with "
                      f"{TESTED}: install it with `pip install llama-cpp-python=={TESTED}`.")


def check_llama_cpp_version() -> None:
    import llama_cpp

    version = str(getattr(llama_cpp, "__version__", "?"))
    numbers = tuple(int(n) for n in re.findall(r"\d+", version)[:3])
    if not SUPPORTED[0] <= numbers < SUPPORTED[1]:
        raise _unknown(version, f"complm supports {'.'.join(map(str, SUPPORTED[0]))} up to, not including, "
                                f"{'.'.join(map(str, SUPPORTED[1]))}")


class LlamaInternals:
    """What complm needs of a Llama beyond its public API: setting the thread count
    of a loaded context, a token's text for the chat template, and building a
    LlamaState from a saved KV cache. Checked when a model loads, so an
    llama-cpp-python that moved them fails with one sentence, not an AttributeError."""

    def __init__(self, llm):
        import llama_cpp
        from llama_cpp.llama import LlamaState

        version = str(getattr(llama_cpp, "__version__", "?"))
        if not hasattr(getattr(llm, "_ctx", None), "ctx"):
            raise _unknown(version, "Llama._ctx.ctx is missing")
        if not hasattr(getattr(llm, "_model", None), "token_get_text"):
            raise _unknown(version, "Llama._model.token_get_text is missing")
        if not isinstance(getattr(llm, "_seed", None), int):
            raise _unknown(version, "Llama._seed is missing")
        fields = set(inspect.signature(LlamaState).parameters)
        if fields != {"input_ids", "scores", "n_tokens", "llama_state", "llama_state_size", "seed"}:
            raise _unknown(version, "LlamaState takes other fields")
        self.llm, self._state_class, self._set_threads = llm, LlamaState, llama_cpp.llama_set_n_threads

    def set_threads(self, threads: int) -> None:
        self._set_threads(self.llm._ctx.ctx, threads, threads)

    def token_text(self, token: int) -> str:
        return self.llm._model.token_get_text(token)

    def state(self, tokens: list[int], data: bytes):
        """A LlamaState that puts `data` (a saved KV cache of `tokens`) back into the context."""
        import numpy as np

        ids = np.zeros(self.llm.n_ctx(), dtype=np.intc)
        ids[: len(tokens)] = tokens
        # Only the KV cache matters: every prompt continues past the prefix,
        # so its logits are recomputed (one zero row broadcasts over them).
        return self._state_class(input_ids=ids, scores=np.zeros((1, self.llm.n_vocab()), dtype=np.single),
                                 n_tokens=len(tokens), llama_state=data, llama_state_size=len(data), seed=self.llm._seed)


@contextlib.contextmanager
def signals_after():
    """Hold Ctrl-C (and SIGTERM) until the block ends, then deliver it.

    llama.cpp logs through a ctypes callback while a model loads; a
    KeyboardInterrupt raised inside that callback is printed as "Exception
    ignored" and dropped, and the run goes on. Only the main thread gets
    signals, and only a Python-level handler can be held; others are left alone."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        handler = signal.getsignal(signum)
        if callable(handler):
            previous[signum] = handler
            signal.signal(signum, lambda n, frame: held.append(n))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if held:
            previous[held[0]](held[0], None)


class LlamaWorker:
    def __init__(self, expert: Expert, path: Path, shares_weights: bool, *, gpu_layers: int | None = None,
                 threads: int = 1, seed: int = 0, n_ctx: int | None = None, state_dir: Path | None = None):
        self.expert, self.path, self.state_dir = expert, path, state_dir
        self._formatter = None
        # An explicit --gpu-layers (or COMPLM_GPU_LAYERS, config) wins over the catalog's per-expert value.
        self.gpu_layers = gpu_layers if gpu_layers is not None else (expert.generation.gpu_layers or 0)
        self.threads, self.seed = threads, seed
        self.n_ctx = n_ctx or expert.generation.n_ctx
        self.memory = estimate_memory(expert, path, shares_weights)
        self.llm = None
        self._internals: LlamaInternals | None = None

    def load(self) -> None:
        if self.llm is not None:
            return
        check_llama_cpp_version()
        try:
            from llama_cpp import Llama

            with signals_after():
                llm = Llama(model_path=str(self.path), n_ctx=self.n_ctx, n_threads=self.threads,
                            n_threads_batch=self.threads, n_gpu_layers=self.gpu_layers, seed=self.seed,
                            n_batch=512, verbose=False)
        except Exception as exc:
            raise ModelError(f"The model '{self.expert.name}' could not be loaded from {self.path} ({exc}); "
                             f"try `complm verify {self.expert.name}`.") from None
        try:
            self._internals = LlamaInternals(llm)
        except ModelError:
            with contextlib.suppress(Exception):
                llm.close()
            raise
        self.llm = llm

    def set_threads(self, threads: int) -> None:
        if self._internals is not None and threads != self.threads:
            self._internals.set_threads(threads)
            self.threads = threads

    def stream(self, messages: list[dict], *, max_tokens: int, temperature: float, seed: int,
               threads: int, schema: dict | None = None, prefix: int = 0) -> Iterator[str]:
        """`prefix`: how many leading messages never change (the planner's examples): their
        evaluated state is kept on disk and reused, so only the new question is processed."""
        try:
            yield from self._stream(messages, max_tokens=max_tokens, temperature=temperature, seed=seed,
                                    threads=threads, schema=schema, prefix=prefix)
        except (ValueError, RuntimeError, OSError) as exc:
            # llama.cpp's failures (a prompt longer than the context, a failed decode) become one sentence.
            raise ModelError(f"The model '{self.expert.name}' failed to generate ({exc}); a shorter question, "
                             f"or a larger n_ctx in the catalog, may help.") from None

    def _stream(self, messages: list[dict], *, max_tokens: int, temperature: float, seed: int,
                threads: int, schema: dict | None, prefix: int) -> Iterator[str]:
        self.load()
        self.set_threads(threads)
        prompt = self._cached_prompt(messages, prefix) if prefix else None
        if prompt is None:
            kwargs = {}
            if schema is not None:
                kwargs["response_format"] = {"type": "json_object", "schema": schema}
            chunks = self.llm.create_chat_completion(messages=messages, stream=True, max_tokens=max_tokens,
                                                     temperature=temperature, seed=seed, **kwargs)
            pick = lambda chunk: chunk["choices"][0].get("delta", {}).get("content")  # noqa: E731
        else:
            tokens, stop = prompt
            kwargs = {}
            if schema is not None:
                from llama_cpp import LlamaGrammar

                kwargs["grammar"] = LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
            chunks = self.llm.create_completion(prompt=tokens, stream=True, max_tokens=max_tokens, stop=stop,
                                                temperature=temperature, seed=seed, **kwargs)
            pick = lambda chunk: chunk["choices"][0].get("text")  # noqa: E731
        try:
            for chunk in chunks:
                text = pick(chunk)
                if text:
                    yield text
        finally:
            chunks.close()

    # --- the prompt-prefix state cache -------------------------------------------

    def _format(self, messages: list[dict]):
        if self._formatter is None:
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            template = self.llm.metadata.get("tokenizer.chat_template")
            if not template:
                return None
            text = self._internals.token_text
            eos, bos = self.llm.token_eos(), self.llm.token_bos()
            self._formatter = Jinja2ChatFormatter(template=template, eos_token=text(eos) if eos != -1 else "",
                                                  bos_token=text(bos) if bos != -1 else "")
        return self._formatter(messages=messages)

    def _cached_prompt(self, messages: list[dict], prefix: int) -> tuple[list[int], list[str]] | None:
        """The prompt as tokens, with the state of its fixed prefix already in the context."""
        try:
            full = self._format(messages)
            probe = [self._format(messages[:prefix] + [{"role": "user", "content": c}]) for c in ("x", "y")]
        except Exception:
            return None
        if full is None or None in probe:
            return None
        head = os.path.commonprefix([probe[0].prompt, probe[1].prompt])
        tokens = self.llm.tokenize(full.prompt.encode(), add_bos=True, special=True)
        head_tokens = self.llm.tokenize(head.encode(), add_bos=True, special=True)
        n = len(head_tokens)
        if n < 16 or tokens[:n] != head_tokens or len(tokens) >= self.llm.n_ctx():
            return None
        stop = full.stop if isinstance(full.stop, list) else ([full.stop] if full.stop else [])
        current = self.llm.input_ids[: self.llm.n_tokens].tolist()
        if current[:n] != head_tokens:
            self._restore_or_build(head, head_tokens)
        return tokens, stop

    def _state_path(self, head: str) -> Path | None:
        if self.state_dir is None:
            return None
        import llama_cpp

        stat = self.path.stat()
        key = hashlib.sha256(f"{self.path.name}|{stat.st_size}|{self.n_ctx}|{self.gpu_layers}|{llama_cpp.__version__}|{head}".encode()).hexdigest()[:24]
        return self.state_dir / f"{self.expert.name}-{key}.state"

    def _restore_or_build(self, head: str, head_tokens: list[int]) -> None:
        path = self._state_path(head)
        if path is not None and path.is_file():
            try:
                self.llm.load_state(self._internals.state(head_tokens, path.read_bytes()))
                return
            except Exception:
                path.unlink(missing_ok=True)
        self.llm.reset()
        self.llm.eval(head_tokens)
        if path is None:
            return
        try:
            atomic_write(path, self.llm.save_state().llama_state)
        except OSError:
            pass  # without the cache the next run only costs more time

    def unload(self) -> None:
        if self.llm is not None:
            with contextlib.suppress(Exception):
                self.llm.close()
            self.llm = None
            self._internals = None


def llama_factory(gpu_layers: int | None, seed: int, state_dir: Path | None = None):
    def make(expert: Expert, path: Path, shares_weights: bool) -> LlamaWorker:
        return LlamaWorker(expert, path, shares_weights, gpu_layers=gpu_layers, seed=seed, state_dir=state_dir)

    return make
