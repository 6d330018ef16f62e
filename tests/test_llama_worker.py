"""LlamaWorker driven directly: generation on a shared engine, the prompt-state cache, the
checks on llama-cpp-python's internals, and Ctrl-C while a model loads. Most use the real 135M model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from complm_cli.experts.llama import Engines, LlamaWorker, check_internals
from complm_cli.cache.catalog import load_catalog
from complm_cli.errors import ModelError

ROOT = Path(__file__).resolve().parent.parent
SYSTEM = ("You answer questions about words. Give the answer only, in as few words as you can. "
          "Never explain. Never repeat the question. If you do not know, say so in one word.")
EXAMPLES = [{"role": "user", "content": "A synonym for big?"}, {"role": "assistant", "content": "large"}]


def messages(question: str) -> list[dict]:
    return [{"role": "system", "content": SYSTEM}, *EXAMPLES, {"role": "user", "content": question}]


def worker(models: Path, state_dir: Path | None = None, engines: Engines | None = None) -> LlamaWorker:
    expert = load_catalog().get("smollm2-135m")
    return LlamaWorker(expert, models / "models" / expert.name / expert.file, engines or Engines(threads=1, slots=2),
                       state_dir=state_dir)


def generate(w: LlamaWorker, question: str, prefix: int = 0) -> str:
    return "".join(w.stream(messages(question), max_tokens=12, temperature=0.0, seed=1, threads=1, prefix=prefix))


@pytest.mark.model
def test_workers_of_one_model_share_one_engine_until_the_last_unloads(models):
    engines = Engines(threads=1, slots=2)
    a, b = worker(models, engines=engines), worker(models, engines=engines)
    a.load()
    b.load()
    assert a.engine is b.engine and len(engines.loaded()) == 1
    assert a.shared == b.shared and a.memory == 0  # the engine is charged once, by key
    assert generate(a, "A synonym for small?").strip()
    assert generate(b, "A synonym for fast?").strip()
    a.unload()
    assert a.engine is None and len(engines.loaded()) == 1  # b still holds it
    b.unload()
    assert engines.loaded() == []


@pytest.mark.model
def test_prompt_state_cache_is_saved_and_restored(models, tmp_path, monkeypatch):
    import llama_cpp

    states = tmp_path / "states"
    first = worker(models, states)
    built = generate(first, "A synonym for happy?", prefix=3)
    first.unload()
    saved = list(states.glob("smollm2-135m-*.seqstate"))
    assert len(saved) == 1 and saved[0].stat().st_size > 0

    restored = []
    original = llama_cpp.llama_state_seq_set_data
    monkeypatch.setattr(llama_cpp, "llama_state_seq_set_data", lambda *a: restored.append(a[3]) or original(*a))
    second = worker(models, states)
    assert generate(second, "A synonym for happy?", prefix=3) == built  # greedy: the same words
    assert len(restored) == 1 and second.engine.prefixes  # read from disk into a prefix sequence
    second.unload()


@pytest.mark.model
def test_damaged_state_file_is_rebuilt(models, tmp_path):
    states = tmp_path / "states"
    w = worker(models, states)
    generate(w, "A synonym for cold?", prefix=3)
    w.unload()
    (saved,) = states.glob("*.seqstate")
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
        LlamaWorker(expert, tmp_path / "none.gguf", Engines(threads=1, slots=1)).load()
    assert "0.9.1" in info.value.message and "0.3.36" in info.value.message


def test_missing_internals_fail_clearly(monkeypatch):
    import llama_cpp

    monkeypatch.delattr(llama_cpp, "llama_memory_seq_cp")
    with pytest.raises(ModelError) as info:
        check_internals()
    assert "llama_memory_seq_cp" in info.value.message and "llama-cpp-python" in info.value.message


CTRL_C_WHILE_LOADING = """
import os, signal, sys, threading, time
signal.signal(signal.SIGINT, signal.default_int_handler)  # a run started in the background inherits SIGINT ignored
from pathlib import Path
from complm_cli.experts.llama import Engines, LlamaWorker
from complm_cli.cache.catalog import load_catalog
expert = load_catalog().get("smollm2-135m")
w = LlamaWorker(expert, Path(sys.argv[1]), Engines(threads=1, slots=2))
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


EXPERTS = ROOT / "complm_cli" / "experts"


def test_only_the_adapter_reaches_into_llama_cpp_and_it_checks_all_it_uses():
    """llama-cpp-python's low-level API lives in llama_adapter.py alone, and check_internals() covers
    every name it takes from there: a release that moved one fails at load with one sentence."""
    import ast

    from complm_cli.experts.llama_adapter import NEEDS

    for path in EXPERTS.glob("*.py"):
        if path.name == "llama_adapter.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not [n for n in names if n.split(".")[0] in ("llama_cpp", "ctypes")], path.name

    tree = ast.parse((EXPERTS / "llama_adapter.py").read_text(encoding="utf-8"))
    used: dict[tuple[str, str], set[str]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            owner = node.value
            if isinstance(owner, ast.Attribute) and isinstance(owner.value, ast.Name) and owner.value.id == "self":
                owner = ast.Name(owner.attr)  # self._ll.x, self.model.x
            where = {"ll": ("llama_cpp", ""), "_ll": ("llama_cpp", ""), "_internals": ("llama_cpp._internals", ""),
                     "model": ("llama_cpp._internals", "LlamaModel")}.get(getattr(owner, "id", ""))
            if where and node.attr != "vocab":  # set when a model loads: read at once there, never later
                used.setdefault(where, set()).add(node.attr)
        elif isinstance(node, ast.ImportFrom) and node.module.startswith("llama_cpp"):
            used.setdefault((node.module, ""), set()).update(a.name for a in node.names if a.name != "_internals")
    for owner, names in used.items():
        assert names <= set(NEEDS[owner]), (owner, names - set(NEEDS[owner]))
    assert used[("llama_cpp", "")] == set(NEEDS[("llama_cpp", "")])  # and nothing checked that is not used
