"""LlamaWorker driven directly: generation, threads, the prompt-state cache, the adapter over
llama-cpp-python's internals, and Ctrl-C while a model loads. Most use the real 135M model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from complm_cli.backends.llama import LlamaInternals, LlamaWorker
from complm_cli.catalog import load_catalog
from complm_cli.errors import ModelError

ROOT = Path(__file__).resolve().parent.parent
SYSTEM = ("You answer questions about words. Give the answer only, in as few words as you can. "
          "Never explain. Never repeat the question. If you do not know, say so in one word.")
EXAMPLES = [{"role": "user", "content": "A synonym for big?"}, {"role": "assistant", "content": "large"}]


def messages(question: str) -> list[dict]:
    return [{"role": "system", "content": SYSTEM}, *EXAMPLES, {"role": "user", "content": question}]


def worker(models: Path, state_dir: Path | None = None) -> LlamaWorker:
    expert = load_catalog().get("smollm2-135m")
    return LlamaWorker(expert, models / "models" / expert.name / expert.file, False, threads=1, state_dir=state_dir)


def generate(w: LlamaWorker, question: str, prefix: int = 0, threads: int = 1) -> str:
    return "".join(w.stream(messages(question), max_tokens=12, temperature=0.0, seed=1, threads=threads, prefix=prefix))


@pytest.mark.model
def test_worker_generates_changes_threads_and_unloads(models):
    w = worker(models)
    w.load()
    assert generate(w, "A synonym for small?").strip()
    assert generate(w, "A synonym for fast?", threads=2).strip()
    assert w.threads == 2
    w.unload()
    assert w.llm is None


@pytest.mark.model
def test_prompt_state_cache_is_saved_and_restored(models, tmp_path, monkeypatch):
    states = tmp_path / "states"
    first = worker(models, states)
    built = generate(first, "A synonym for happy?", prefix=3)
    first.unload()
    saved = list(states.glob("smollm2-135m-*.state"))
    assert len(saved) == 1 and saved[0].stat().st_size > 0

    second = worker(models, states)
    second.load()
    restored = []
    original = second.llm.load_state
    monkeypatch.setattr(second.llm, "load_state", lambda state: restored.append(state) or original(state))
    assert generate(second, "A synonym for happy?", prefix=3) == built  # greedy: the same words
    assert len(restored) == 1
    second.unload()


@pytest.mark.model
def test_damaged_state_file_is_rebuilt(models, tmp_path):
    states = tmp_path / "states"
    w = worker(models, states)
    generate(w, "A synonym for cold?", prefix=3)
    w.unload()
    (saved,) = states.glob("*.state")
    saved.write_bytes(b"not a state")
    w = worker(models, states)
    assert generate(w, "A synonym for cold?", prefix=3).strip()
    assert saved.stat().st_size > len(b"not a state")
    w.unload()


def test_an_unknown_llama_cpp_version_fails_clearly(monkeypatch, tmp_path):
    import llama_cpp

    monkeypatch.setattr(llama_cpp, "__version__", "0.9.1")
    expert = load_catalog().get("smollm2-135m")
    with pytest.raises(ModelError) as info:
        LlamaWorker(expert, tmp_path / "none.gguf", False).load()
    assert "0.9.1" in info.value.message and "0.3.36" in info.value.message


def test_missing_internals_fail_clearly():
    class NotQuiteLlama:
        _seed = 0

    with pytest.raises(ModelError) as info:
        LlamaInternals(NotQuiteLlama())
    assert "_ctx" in info.value.message and "llama-cpp-python" in info.value.message


CTRL_C_WHILE_LOADING = """
import os, signal, sys, threading, time
from pathlib import Path
from complm_cli.backends.llama import LlamaWorker
from complm_cli.catalog import load_catalog
expert = load_catalog().get("smollm2-135m")
w = LlamaWorker(expert, Path(sys.argv[1]), False)
try:
    threading.Timer(float(sys.argv[2]), lambda: os.kill(os.getpid(), signal.SIGINT)).start()
    w.load()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        pass
    print("LOST")
except KeyboardInterrupt:
    print("INTERRUPTED")
"""


@pytest.mark.model
@pytest.mark.parametrize("delay", [0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3])
def test_ctrl_c_while_a_model_loads_is_not_lost(models, delay):
    """llama.cpp logs through a ctypes callback while it loads; a KeyboardInterrupt raised
    inside it is printed and dropped. Wherever the signal lands, it must arrive."""
    expert = load_catalog().get("smollm2-135m")
    path = models / "models" / expert.name / expert.file
    proc = subprocess.run([sys.executable, "-c", CTRL_C_WHILE_LOADING, str(path), str(delay)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == "INTERRUPTED", proc.stdout + proc.stderr
    assert "Exception ignored" not in proc.stderr
