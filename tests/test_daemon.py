"""The background server (daemon/): started by the first `complm ask`, used by the next, replaced when it does not
fit, stopped by `complm stop`, gone by itself when idle; every fault ends in an answer here or one sentence.

The server tests run `complm` as a user does, in processes of their own, over the 135M model, each with its own
runtime folder; each checks that no server process is left behind.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from complm_cli.cache.config import load_settings, parse_duration
from complm_cli.cli.app import app
from complm_cli.daemon import connect, identity
from complm_cli.daemon.keeper import Keeper
from complm_cli.daemon.place import Place, Unavailable, alive, private_folder
from complm_cli.serve.runs import Runs
from tests.conftest import TINY_CATALOG
from tests.helpers import Fake, expert, pool_for

runner = CliRunner()
model = pytest.mark.model
QUESTION = "Who wrote Hamlet?"  # a model answers it: the calculator alone would load none


# --- settings ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, seconds", [("300", 300), ("5m", 300), ("1h30m", 5400), ("90s", 90), ("0", 0),
                                           ("-1", -1), ("500ms", 0.5), (" 2.5m ", 150), (42, 42)])
def test_keep_alive_is_read_as_ollama_writes_it(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["soon", "5 minutes", "m", "", "1d", True])
def test_a_keep_alive_that_is_no_time_is_none(text):
    assert parse_duration(text) is None


def test_the_server_settings_come_from_the_config_the_environment_and_the_flags(isolated, monkeypatch):
    monkeypatch.delenv("COMPLM_DAEMON")  # which conftest sets to 0 for every other test
    s = load_settings()
    assert (s.daemon, s.keep_alive, s.idle_exit) == (True, 300, 1800)
    (isolated["config"]).mkdir(parents=True)
    (isolated["config"] / "config.toml").write_text('daemon = false\nkeep_alive = "10m"\nidle_exit = "2h"\n')
    s = load_settings()
    assert (s.daemon, s.keep_alive, s.idle_exit) == (False, 600, 7200)
    monkeypatch.setenv("COMPLM_KEEP_ALIVE", "-1")
    monkeypatch.setenv("COMPLM_DAEMON", "on")
    s = load_settings(flags={"keep_alive": "1h"})
    assert (s.daemon, s.keep_alive) == (True, 3600)
    assert load_settings(flags={"daemon": False}).daemon is False  # --no-daemon


@pytest.mark.parametrize("args, env, words", [
    (["ask", "x", "--keep-alive", "soon", "--offline"], {}, "--keep-alive soon"),
    (["ask", "x", "--offline"], {"COMPLM_KEEP_ALIVE": "later"}, "COMPLM_KEEP_ALIVE='later'"),
    (["ask", "x", "--offline"], {"COMPLM_IDLE_EXIT": "0"}, "COMPLM_IDLE_EXIT='0'"),
    (["ask", "x", "--offline"], {"COMPLM_DAEMON": "maybe"}, "COMPLM_DAEMON='maybe'"),
])
def test_a_bad_server_setting_is_one_sentence_and_exit_2(args, env, words, monkeypatch):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    r = runner.invoke(app, args)
    assert r.exit_code == 2, r.output
    assert words in r.output and "Traceback" not in r.output


# --- where it listens ---------------------------------------------------------------------------------------------

@pytest.fixture
def runtime(monkeypatch):
    """A runtime folder of the test's own, short enough for a Unix socket path."""
    root = Path(tempfile.mkdtemp(prefix="cx"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(root))
    yield root
    import shutil

    shutil.rmtree(root, ignore_errors=True)


def test_the_server_folder_is_the_users_alone(runtime, isolated):
    place = Place.of(load_settings())
    assert place.folder == runtime / "complm"
    assert stat.S_IMODE(os.stat(place.folder).st_mode) == 0o700
    os.chmod(place.folder, 0o755)  # opened by someone: closed again before it is used
    assert stat.S_IMODE(os.stat(Place.of(load_settings()).folder).st_mode) == 0o700


def test_a_server_folder_that_is_a_link_or_a_file_is_refused(runtime):
    target = runtime / "elsewhere"
    target.mkdir()
    (runtime / "complm").symlink_to(target)
    with pytest.raises(Unavailable, match="not a folder of this user's"):
        private_folder(runtime / "complm")
    (runtime / "file").write_text("")
    with pytest.raises(Unavailable, match="not a folder of this user's"):
        private_folder(runtime / "file")


def test_one_server_per_cache(runtime, isolated, tmp_path, monkeypatch):
    one = Place.of(load_settings())
    monkeypatch.setenv("COMPLM_CACHE_DIR", str(tmp_path / "other-cache"))
    assert Place.of(load_settings()).socket != one.socket


def test_a_socket_path_too_long_runs_here_with_one_sentence(isolated, monkeypatch, tmp_path):
    deep = tmp_path / ("x" * 60) / ("y" * 60)
    deep.mkdir(parents=True)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(deep))
    monkeypatch.setenv("COMPLM_DAEMON", "1")
    r = runner.invoke(app, ["ask", QUESTION, "--offline"])
    assert "too long for a Unix socket" in r.output and "answering in this process" in r.output
    assert r.exit_code == 4  # then this process says what it lacks: nothing is pulled offline


# --- what a server is ---------------------------------------------------------------------------------------------

def test_a_server_that_runs_with_other_settings_is_described_in_flag_words(isolated):
    from complm_cli.cache.catalog import catalog_for

    settings = load_settings()
    cat = catalog_for(settings)
    ours = identity.options(settings, cat)
    assert identity.differences(ours, ours) == []
    theirs = {**ours, "threads": ours["threads"] + 1, "gpu_layers": -1}
    assert identity.differences(theirs, ours) == ["--gpu-layers unset (it runs with -1)",
                                                  f"--threads {ours['threads']} (it runs with {ours['threads'] + 1})"]
    other = identity.options(load_settings(flags={"catalog": TINY_CATALOG}), catalog_for(load_settings(flags={"catalog": TINY_CATALOG})))
    assert identity.differences(other, ours) == ["the catalog (it was changed)"]
    # What only the client uses is not the server's: corpora are named with each request.
    assert identity.options(load_settings(flags={"corpora": "notes"}), cat) == ours
    state = {"build": identity.build_id(), "options": ours}
    assert connect.mismatch(state, settings, cat) is None
    assert "not this complm" in connect.mismatch({**state, "build": "0.0.1+old", "version": "0.0.1"}, settings, cat)


# --- keeping models, and leaving ---------------------------------------------------------------------------------

def _pool():
    fake = Fake()
    return pool_for(fake), {n: expert(n) for n in ("a", "b")}


def test_the_pool_unloads_what_no_run_used_for_keep_alive():
    pool, ex = _pool()
    a, b = pool.acquire(ex["a"]), pool.acquire(ex["b"])
    pool.release(a)
    assert pool.expire(3600) == [] and sorted(m["name"] for m in pool.models()) == ["a", "b"]
    time.sleep(0.05)
    assert pool.expire(0.01) == ["a"]  # b is in use: it stays, whatever its age
    assert [(m["name"], m["busy"]) for m in pool.models()] == [("b", True)]
    pool.release(b)
    assert pool.models()[0]["idle_since"] is not None and pool.models()[0]["memory"] == 100
    assert pool.expire(0) == ["b"] and pool.models() == []


class _Session:
    def __init__(self, pool):
        self.pool = pool
        self.catalog = type("C", (), {"embedder": type("E", (), {"name": "emb"})()})()


def test_the_keeper_unloads_after_keep_alive_and_stops_the_server_after_idle_exit():
    pool, ex = _pool()
    pool.release(pool.acquire(ex["a"]))
    runs, stopped = Runs(), []
    keeper = Keeper(_Session(pool), keep_alive=0.05, idle_exit=0.3, options={}, build="b")
    keeper.runs, keeper._shutdown = runs, lambda: stopped.append(True)
    cancel = runs.start()  # a run in flight: nothing is unloaded, nothing stops
    time.sleep(0.1)
    keeper.tick()
    assert [m["name"] for m in pool.models()] == ["a"] and not stopped
    assert keeper.status()["running"] is True and keeper.status()["models"][0]["until"] != "in use"  # idle, a run elsewhere
    runs.end(cancel)
    time.sleep(0.1)
    keeper.tick()
    assert pool.models() == [] and not stopped
    time.sleep(0.3)
    keeper.tick()
    assert stopped and keeper.exit_reason.startswith("no request for")


def test_keep_alive_below_zero_keeps_models_for_as_long_as_the_server_runs():
    pool, ex = _pool()
    pool.release(pool.acquire(ex["a"]))
    keeper = Keeper(_Session(pool), keep_alive=-1, idle_exit=3600, options={}, build="b")
    keeper.runs = Runs()
    keeper.tick()
    assert keeper.status()["models"][0]["until"] == "forever"


# --- the server, as a user runs it -------------------------------------------------------------------------------

def _servers(runtime: Path) -> list[int]:
    """Pids of live background servers of this test (their socket lives under its runtime folder)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"_daemon" in cmd and any(str(runtime).encode() in part or b'"cache_dir"' in part for part in cmd) \
                and alive(int(entry.name)) and str(runtime).encode() in (entry / "environ").read_bytes():
            pids.append(int(entry.name))
    return pids


@pytest.fixture
def daemon_env(models, runtime, monkeypatch):
    """The daemon on, over the tiny catalog; after the test, no server of it may be left."""
    monkeypatch.setenv("COMPLM_DAEMON", "1")
    monkeypatch.setenv("COMPLM_CATALOG", str(TINY_CATALOG))
    monkeypatch.setenv("COMPLM_THREADS", "2")
    monkeypatch.setenv("COMPLM_SEED", "1")
    yield runtime
    left = _servers(runtime)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"server processes left behind: {left}"


def complm(*args: str, timeout: float = 300, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "complm_cli", *args], input=stdin, capture_output=True, text=True,
                          timeout=timeout)


def _ps() -> dict | None:
    r = complm("ps", "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["server"]


@model
def test_the_first_ask_starts_the_server_the_next_uses_it_and_stop_ends_it(daemon_env):
    first = complm("ask", QUESTION)
    assert first.returncode == 0, first.stderr
    assert "starting a background server" in first.stderr and first.stdout.strip()
    state = _ps()
    pid = state["pid"]
    assert _servers(daemon_env) == [pid]
    place = Path(daemon_env) / "complm"
    sock = next(place.glob("*.sock"))
    assert stat.S_ISSOCK(os.stat(sock).st_mode) and stat.S_IMODE(os.stat(sock).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(place).st_mode) == 0o700
    # The models the run used stay, with the time they stay until.
    assert [m["name"] for m in state["models"]] == ["smollm2-135m"]
    assert state["models"][0]["memory"] > 0 and state["models"][0]["until"] > time.time() + 200
    second = complm("ask", "Who wrote Hamlet, and what is 2 plus 2?", "--json")
    assert second.returncode == 0, second.stderr
    assert "starting" not in second.stderr and json.loads(second.stdout)["status"] in ("ok", "partial")
    assert _ps()["pid"] == pid
    graph = complm("graph", QUESTION, "--format", "json")
    assert graph.returncode == 0 and json.loads(graph.stdout)["nodes"], graph.stderr
    table = complm("ps")
    assert "smollm2-135m" in table.stdout and re.search(r"in [45]m", table.stdout), table.stdout
    doctor = complm("doctor", "--json")
    assert json.loads(doctor.stdout)["background_server"]["pid"] == pid
    # The run log keeps runs through the server as it keeps those here.
    assert len(json.loads(complm("logs", "--json").stdout)) == 2
    stopped = complm("stop")
    assert stopped.returncode == 0 and f"pid {pid}" in stopped.stderr
    assert not alive(pid) and not sock.exists() and _servers(daemon_env) == []
    assert _ps() is None
    none = complm("stop")
    assert none.returncode == 0 and "No complm server was running" in none.stderr


@model
def test_no_daemon_and_expert_run_here(daemon_env):
    r = complm("ask", QUESTION, "--no-daemon")
    assert r.returncode == 0 and "starting" not in r.stderr and _servers(daemon_env) == []
    r = complm("ask", QUESTION, "--expert", "smollm2-135m")
    assert r.returncode == 0 and "starting" not in r.stderr and _servers(daemon_env) == []


@model
def test_a_server_killed_with_sigkill_is_replaced_by_a_fresh_one(daemon_env):
    assert complm("ask", QUESTION).returncode == 0
    pid = _ps()["pid"]
    os.kill(pid, signal.SIGKILL)
    while alive(pid):
        time.sleep(0.05)
    sock = next((Path(daemon_env) / "complm").glob("*.sock"))
    assert sock.exists()  # stale: nothing listens on it
    r = complm("ask", QUESTION)
    assert r.returncode == 0 and "starting a background server" in r.stderr, r.stderr
    new = _ps()["pid"]
    assert new != pid and _servers(daemon_env) == [new]
    assert complm("stop").returncode == 0


@model
def test_two_asks_at_once_start_one_server(daemon_env):
    procs = [subprocess.Popen([sys.executable, "-m", "complm_cli", "ask", QUESTION], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=400) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert sum("starting a background server" in err for _, err in outs) == 1
    assert len(_servers(daemon_env)) == 1
    assert complm("stop").returncode == 0


@model
def test_other_threads_restart_the_server_and_say_why(daemon_env):
    assert complm("ask", QUESTION).returncode == 0
    pid = _ps()["pid"]
    r = complm("ask", QUESTION, "--threads", "1")
    assert r.returncode == 0, r.stderr
    assert "restarting the background server: this run asks for --threads 1 (it runs with 2)" in r.stderr
    state = _ps()
    assert state["pid"] != pid and state["options"]["threads"] == 1 and not alive(pid)
    assert _servers(daemon_env) == [state["pid"]]
    assert complm("stop").returncode == 0


@model
def test_a_server_of_another_complm_is_replaced(daemon_env, monkeypatch):
    assert complm("ask", QUESTION).returncode == 0
    pid = _ps()["pid"]
    # This client is a newer complm than the server it finds.
    monkeypatch.setattr(identity, "build_id", lambda: "9.9.9+new")
    monkeypatch.setattr(connect, "_start", lambda place, settings, e: None)  # a 9.9.9 server is not to be had here
    r = runner.invoke(app, ["ask", QUESTION])
    assert "restarting the background server: it is 0.1.0, not this complm (9.9.9+new)" in r.output
    assert not alive(pid) and _servers(daemon_env) == []


@model
def test_an_idle_server_unloads_its_models_then_exits_by_itself(daemon_env, monkeypatch):
    monkeypatch.setenv("COMPLM_IDLE_EXIT", "6s")
    r = complm("ask", QUESTION, "--keep-alive", "1s")
    assert r.returncode == 0, r.stderr
    state = _ps()
    deadline = time.time() + 30
    while state and state["models"] and time.time() < deadline:
        time.sleep(0.5)
        state = _ps()
    assert state is not None and state["models"] == [] and state["keep_alive"] == 1
    pid = state["pid"]
    while alive(pid) and time.time() < deadline + 30:
        time.sleep(0.2)
    assert not alive(pid) and _ps() is None
    log = next((Path(daemon_env) / "complm").glob("*.log")).read_text()
    assert "unloaded smollm2-135m" in log and "exiting (no request for 6 s)" in log


@model
def test_a_server_that_does_not_answer_leaves_the_question_to_this_process(daemon_env):
    """Something takes connections on the socket and never answers: one sentence, then the answer from here."""
    place = Place.of(load_settings())
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(place.socket))
    listener.listen(8)
    held = []
    stop = threading.Event()

    def accept():
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                pass

    threading.Thread(target=accept, daemon=True).start()
    try:
        r = complm("ask", QUESTION)
        assert r.returncode == 0, r.stderr
        assert f"The background complm server (pid {os.getpid()}) does not answer; `complm stop` ends it; " \
               "answering in this process." in r.stderr
        assert r.stdout.strip() and _servers(daemon_env) == []
    finally:
        stop.set()
        listener.close()
        for c in held:
            c.close()


def test_ps_and_stop_with_no_server(runtime):
    r = runner.invoke(app, ["ps"])
    assert r.exit_code == 0 and "No complm server is running" in r.output
    r = runner.invoke(app, ["ps", "--json"])
    assert json.loads(r.stdout) == {"server": None}
    r = runner.invoke(app, ["stop"])
    assert r.exit_code == 0 and "No complm server was running" in r.output


def test_a_background_server_gone_between_the_look_and_the_question_is_one_sentence(runtime, tmp_path):
    from complm_cli.serve.client import ServerClient, ServerError

    client = ServerClient(None, uds=str(tmp_path / "gone.sock"))
    with pytest.raises(ServerError, match=r"The background complm server stopped answering at .*gone\.sock .*; "
                                          r"ask again to start a fresh one\."):
        client.ask(QUESTION)


@pytest.mark.skipif(not hasattr(os, "fork") or os.geteuid() != 0, reason="taking another user's id needs root")
def test_another_user_cannot_reach_the_server(runtime, isolated):
    """The socket lies in a 0700 folder of its user's: a process of another user is refused before it connects."""
    place = Place.of(load_settings())
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    mask = os.umask(0o177)
    try:
        listener.bind(str(place.socket))
    finally:
        os.umask(mask)
    listener.listen(1)
    try:
        pid = os.fork()
        if pid == 0:  # the child becomes 'nobody' and tries the socket: exit 0 only if it was refused
            code = 1
            try:
                os.setgid(65534)
                os.setuid(65534)
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                    s.connect(str(place.socket))
            except PermissionError:
                code = 0
            except BaseException:
                code = 2
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:  # its own user gets through
            s.connect(str(place.socket))
    finally:
        listener.close()
