"""In-process llama.cpp workers (llama-cpp-python): handles on one batched engine per model file."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import threading
from pathlib import Path

from complm_cli.cache.catalog import Expert
from complm_cli.errors import ModelError
from complm_cli.experts import llama_adapter
from complm_cli.experts.waiting import cpu_watch
from complm_cli.experts.base import Worker
from complm_cli.experts.engine import PREFIXES, Engine, Request, Sequence

# Where callers (and tests) have always found them; they check what llama_adapter uses.
from complm_cli.experts.llama_adapter import SUPPORTED, TESTED, check_internals, check_llama_cpp_version

__all__ = ["CHATML", "SUPPORTED", "TESTED", "Engines", "LlamaWorker", "check_internals", "check_llama_cpp_version",
           "estimate_memory", "llama_factory", "signals_after"]


def estimate_memory(expert: Expert, path: Path, n_ctx: int, streams: int) -> int:
    """Resident bytes of one engine: the weights (mmap), compute buffers, and `streams` KV streams of `n_ctx` cells.

    Measured with llama-cpp-python 0.3.36 on the CPU: a Llama over the 1.5B
    file at n_ctx 4096 added 0.78 GB beyond the file, of which the KV cache
    is about 0.12 GB (28 KB a cell); the 135M model's KV takes 23 KB a cell,
    half its file size per 2048 cells. Half the file for compute and repacked
    tensors, and the larger of 11% of the file or 96 MB per 4096 cells of
    each stream, err on the safe side for the default models."""
    try:
        weights = path.stat().st_size
    except OSError:
        weights = expert.size or 0
    per_stream = int(max(0.11 * weights, 96 * 1024 * 1024) * n_ctx / 4096)
    return weights + weights // 2 + 64 * 1024 * 1024 + streams * per_stream


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


class Engines:
    """The engines of one process, one per model file: workers of the same expert (and
    experts over the same file) share one, and the CPU threads are divided among
    the engines that have work, between steps (never two engines at full width
    on the same cores, which slows both far below half speed)."""

    def __init__(self, *, threads: int, slots: int, gpu_layers: int | None = None):
        self.threads, self.slots, self.gpu_layers = threads, slots, gpu_layers
        # Loads are rare and short next to generation: one at a time (releases wait for it too) keeps
        # memory predictable. The table has a lock of its own, never held during a load: the decode
        # threads read it every step (threads_for) and must not wait for a model to load.
        self._loading = threading.Lock()
        self._lock = threading.Lock()
        self._engines: dict[tuple, tuple[Engine, int]] = {}  # key -> (engine, workers holding it)
        self.cpu = cpu_watch()  # the cores other processes leave free, which a step keeps to while they are busy

    def key(self, expert: Expert, path: Path) -> tuple:
        return (str(path), self.gpu_layers_for(expert), self.n_ctx_for(expert))

    def gpu_layers_for(self, expert: Expert) -> int:
        # An explicit --gpu-layers (or COMPLM_GPU_LAYERS, config) wins over the catalog's per-expert value.
        return self.gpu_layers if self.gpu_layers is not None else (expert.generation.gpu_layers or 0)

    def n_ctx_for(self, expert: Expert) -> int:
        return expert.generation.n_ctx  # per sequence

    def acquire(self, expert: Expert, path: Path) -> Engine:
        key = self.key(expert, path)
        with self._loading:
            with self._lock:
                if key in self._engines:
                    engine, holders = self._engines[key]
                    self._engines[key] = (engine, holders + 1)
                    return engine
            check_llama_cpp_version()
            check_internals()
            engine = None
            try:
                with signals_after():
                    engine = Engine(path, n_ctx=self.n_ctx_for(expert), slots=self.slots, threads=self.threads,
                                    gpu_layers=self.gpu_layers_for(expert), name=expert.name, threads_for=self.threads_for)
            except BaseException as exc:
                if engine is not None:  # built, then a Ctrl-C held during the load was delivered: nobody holds it
                    engine.close()
                if isinstance(exc, ModelError) or not isinstance(exc, Exception):
                    raise
                raise ModelError(f"The model '{expert.name}' could not be loaded from {path} ({exc}); "
                                 f"try `complm verify {expert.name}`.") from None
            with self._lock:
                self._engines[key] = (engine, 1)
            return engine

    def release(self, engine: Engine) -> None:
        with self._loading, self._lock:
            for key, (e, holders) in list(self._engines.items()):
                if e is engine:
                    if holders > 1:
                        self._engines[key] = (e, holders - 1)
                        return
                    del self._engines[key]
                    break
            else:
                return
        engine.close()

    def threads_for(self, engine: Engine) -> int:
        with self._lock:
            engines = [e for e, _ in self._engines.values()]
        busy = sum(1 for e in engines if e.busy) or 1  # each takes its own engine's lock: not under ours
        free = self.cpu.free()
        # Quiet, the threads asked for (even more than the cores); while others keep cores busy, no more than the rest.
        threads = self.threads if free >= self.cpu.cores else min(self.threads, free)
        return max(1, threads // busy)

    def loaded(self) -> list[Engine]:
        with self._lock:
            return [e for e, _ in self._engines.values()]


CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


class LlamaWorker(Worker):
    """One sequence at a time on its model's shared engine: the pool may hold several
    workers of one expert, and their nodes are decoded together in one batch."""

    deadlines = True  # stream() takes a timeout, enforced between decode steps
    drafts = True  # stream() takes a drafter whose guesses the engine checks

    def __init__(self, expert: Expert, path: Path, engines: Engines, *, state_dir: Path | None = None):
        super().__init__(expert)
        self.path, self.engines, self.state_dir = path, engines, state_dir
        self.engine: Engine | None = None
        self._formatter = None
        self.memory = 0  # a worker is a handle; the engine's memory is charged once, under `shared`
        self.shared = (repr(engines.key(expert, path)), estimate_memory(expert, path, engines.n_ctx_for(expert), engines.slots + PREFIXES))

    @property
    def gpu_layers(self) -> int:
        return self.engines.gpu_layers_for(self.expert)

    def load(self) -> None:
        if self.engine is None:
            self.engine = self.engines.acquire(self.expert, self.path)

    def stream(self, messages: list[dict], *, max_tokens: int, temperature: float, seed: int,
               threads: int = 0, prefix: int = 0, timeout: float | None = None,
               grammar: str | None = None, cancel=None, draft=None) -> Sequence:
        """`prefix`: how many leading messages never change (the planner's examples): they are
        evaluated once, kept on disk, and copied into each new sequence. `threads` is only a
        hint: the engines divide the CPU among themselves. The sequence iterates text pieces and
        counts the tokens behind them (`tokens`)."""
        self.load()
        engine = self.engine
        try:
            prompt, stops = self._format(messages)
            tokens = engine.tokenize(prompt)
            if prefix:
                self._cache_prefix(messages, prefix, tokens)
            sequence = engine.submit(Request(tokens, max_tokens=max_tokens, temperature=temperature, seed=seed,
                                             grammar=grammar, stop=tuple(s for s in stops if s), timeout=timeout,
                                             cancelled=cancel.is_set if cancel is not None else None, draft=draft))
        except ModelError:
            raise
        except (ValueError, RuntimeError, OSError) as exc:
            raise ModelError(f"The model '{self.expert.name}' failed to generate ({exc}); a shorter question, "
                             f"or a larger n_ctx in the catalog, may help.") from None
        return sequence

    def _format(self, messages: list[dict]) -> tuple[str, list[str]]:
        if self._formatter is None:
            engine = self.engine
            template = engine.metadata().get("tokenizer.chat_template") or CHATML
            self._formatter = llama_adapter.chat_formatter(template, eos=engine.special_text("eos"),
                                                           bos=engine.special_text("bos"))
        out = self._formatter(messages=messages)
        stop = out.stop if isinstance(out.stop, list) else ([out.stop] if out.stop else [])
        return out.prompt, stop

    def _cache_prefix(self, messages: list[dict], prefix: int, tokens: list[int]) -> None:
        """Find the tokens every prompt with these first `prefix` messages starts with, and keep them evaluated."""
        probe = [self._format(messages[:prefix] + [{"role": "user", "content": c}])[0] for c in ("x", "y")]
        head = os.path.commonprefix(probe)
        head_tokens = self.engine.tokenize(head)
        n = len(head_tokens)
        if n < 16 or tokens[:n] != head_tokens:
            return
        self.engine.set_prefix(head_tokens, self._state_path(head))

    def _state_path(self, head: str) -> Path | None:
        if self.state_dir is None:
            return None
        stat = self.path.stat()
        engine_key = self.engines.key(self.expert, self.path)
        key = hashlib.sha256(f"{self.path.name}|{stat.st_size}|{engine_key[1:]}|{self.engines.slots}|"
                             f"{llama_adapter.version()}|{head}".encode()).hexdigest()[:24]
        return self.state_dir / f"{self.expert.name}-{key}.seqstate"

    def unload(self) -> None:
        if self.engine is not None:
            engine, self.engine = self.engine, None
            self.engines.release(engine)


def llama_factory(gpu_layers: int | None, state_dir: Path | None = None, *, threads: int = 2, slots: int = 4):
    """Workers over one Engines: each call's seed goes with its request, not with the worker."""
    engines = Engines(threads=threads, slots=slots, gpu_layers=gpu_layers)

    def make(expert: Expert, path: Path) -> LlamaWorker:
        return LlamaWorker(expert, path, engines, state_dir=state_dir)

    make.engines = engines  # for benchmarks and tests that look inside
    return make
