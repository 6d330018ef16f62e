"""How llama.cpp's threads wait (complm_cli/experts/waiting.py): they sleep at barriers when other processes keep
the CPU busy as complm starts, spin otherwise, and OMP_WAIT_POLICY set by the user is left alone. Each case runs
in a fresh process, as the choice is made once, before llama.cpp loads."""

import os
import subprocess
import sys

import pytest

from complm_cli.experts import waiting
from tests.conftest import ROOT

SHOW = ("from complm_cli.experts.waiting import settle; import os; "
        "print(settle()); print(os.environ.get('OMP_WAIT_POLICY', '-'))")


def fresh(env: dict) -> list[str]:
    out = subprocess.run([sys.executable, "-c", SHOW], env=env, capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="the CPU's load is read from Linux's /proc/stat")
def test_a_busy_core_makes_the_threads_sleep():
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        assert waiting.others_busy(0.3) >= waiting.BUSY_CORES
        chosen, policy = fresh(env)
    finally:
        spinner.kill()
        spinner.wait()
    assert chosen.startswith("sleep (other processes kept") and policy == "PASSIVE"


def test_a_free_cpu_keeps_openmps_spinning(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.setattr(waiting, "_chosen", None)
    monkeypatch.setattr(waiting, "others_busy", lambda: 0.1)
    monkeypatch.setitem(sys.modules, "llama_cpp", None)
    del sys.modules["llama_cpp"]  # as in a process that has not loaded it yet
    assert waiting.settle() == "spin (the CPU was free)" and "OMP_WAIT_POLICY" not in os.environ
    assert waiting.settle() == "spin (the CPU was free)"  # chosen once


def test_the_users_own_policy_is_left_alone():
    env = {**os.environ, "OMP_WAIT_POLICY": "ACTIVE"}
    assert fresh(env) == ["ACTIVE (OMP_WAIT_POLICY)", "ACTIVE"]
    assert fresh({**os.environ, "OMP_WAIT_POLICY": ""})[0] == "OpenMP default (OMP_WAIT_POLICY)"


def test_too_late_once_llama_cpp_is_loaded(monkeypatch):
    import llama_cpp  # noqa: F401

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.setattr(waiting, "_chosen", None)
    assert waiting.settle().startswith("spin (llama.cpp was loaded before")
    assert "OMP_WAIT_POLICY" not in os.environ
