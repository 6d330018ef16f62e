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


def _until(check, seconds: float = 5.0) -> bool:
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="the CPU's load is read from Linux's /proc/stat")
def test_the_cores_left_follow_a_load_that_comes_and_goes():
    """A process that lives on (the background server) uses one core fewer while another process keeps one busy,
    and all of them again once it stops; its own work never counts against it."""
    cores = os.cpu_count() or 1
    watch = waiting.CpuWatch(cores)
    assert _until(lambda: watch.free() == cores)
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        assert _until(lambda: watch.free() == max(1, cores - 1))
        sum(i * i for i in range(3_000_000))  # this process's own work is not another's load
        assert watch.free() == max(1, cores - 1)
    finally:
        spinner.kill()
        spinner.wait()
    assert _until(lambda: watch.free() == cores)


def test_the_engines_decode_on_the_cores_left():
    from complm_cli.experts.llama import Engines

    engines = Engines(threads=4, slots=1)
    engines.cpu = type("Loaded", (), {"cores": 2, "free": lambda self: 1})()
    assert engines.threads_for(None) == 1  # one of two cores taken: one thread
    engines.cpu = type("Quiet", (), {"cores": 2, "free": lambda self: 2})()
    assert engines.threads_for(None) == 4  # quiet: the threads asked for, even more than the cores
    engines.cpu = type("Wide", (), {"cores": 16, "free": lambda self: 15})()
    assert engines.threads_for(None) == 4  # never more than --threads
