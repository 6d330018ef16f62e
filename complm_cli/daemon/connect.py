"""Finding the user's background server, starting one when none runs, replacing one that does not fit, stopping it.

Every step that could leave a user stuck ends in the run going on in this
process, after one sentence: a server that does not answer, one that does
not start, a folder that is not the user's own. Two `complm ask` at once
start one server: the check and the start happen under a lock (place.py).
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

from complm_cli.daemon.place import Place, Unavailable, alive

STATUS_TIMEOUT = 3.0  # seconds for a server to say what it is; a busy one answers in milliseconds
START_TIMEOUT = 300.0  # seconds for a new server to import its libraries and bind (the models load on first use)
STOP_TIMEOUT = 10.0  # seconds for a server asked to stop to be gone, before it is terminated


def _client(place: Place, **kwargs):
    from complm_cli.serve.client import ServerClient

    return ServerClient(None, uds=str(place.socket), **kwargs)


def status(place: Place, timeout: float = STATUS_TIMEOUT) -> dict | None:
    """What the server says of itself; None when none listens (no socket, or one left by a server that died).
    A server that takes the connection and does not answer is Unavailable."""
    import httpx2

    if not place.socket.exists():
        return None
    try:
        with _client(place)._http(timeout=timeout) as http:
            response = http.get("/api/status")
    except httpx2.TimeoutException:
        pid = peer_pid(place)
        raise Unavailable(f"The background complm server{f' (pid {pid})' if pid else ''} does not answer; "
                          "`complm stop` ends it") from None
    except httpx2.TransportError:
        return None
    if response.status_code == 404:  # a server from before /api/status: older, to be replaced
        return {"version": "an older complm", "build": None, "pid": peer_pid(place)}
    try:
        state = response.json()
        if not isinstance(state, dict):
            raise ValueError
    except ValueError:
        return {"version": "an unknown complm", "build": None, "pid": peer_pid(place)}
    return state


def peer_pid(place: Place) -> int | None:
    """The pid of the process that listens on the socket, as the kernel says it (Linux); None where it cannot."""
    if not hasattr(socket, "SO_PEERCRED"):
        return None
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(1)
            s.connect(str(place.socket))
            pid, uid, _ = struct.unpack("3i", s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    except OSError:
        return None
    return pid if uid == os.getuid() and pid > 0 else None


def mismatch(state: dict, settings, catalog) -> str | None:
    """Why the running server does not fit this run (another complm, other settings); None when it fits."""
    from complm_cli.daemon.identity import build_id, differences, options

    if state.get("build") != build_id():
        return f"it is {state.get('version') or 'another complm'}, not this complm ({build_id()})"
    diff = differences(state.get("options") or {}, options(settings, catalog))
    return f"this run asks for {', '.join(diff)}" if diff else None


def reach(settings, catalog, e, reporter=None):
    """A client of the user's background server, which is started (or replaced) when need be; None, after one
    sentence on stderr where there is something to say, when the run should go on in this process.
    `e`: the terminal (cli.common.Environment); `reporter`: how pulling the server's models is shown."""
    try:
        return _reach(settings, catalog, e, reporter)
    except Unavailable as exc:
        print(f"complm: {exc.message}; answering in this process.", file=e.stderr, flush=True)
        return None


def _reach(settings, catalog, e, reporter):
    place = Place.of(settings)
    client = _client(place, keep_alive=settings.keep_alive, corpora=list(settings.corpora))
    state = status(place)
    if state is not None and mismatch(state, settings, catalog) is None:
        return client
    with place.starting(START_TIMEOUT + STOP_TIMEOUT + 30):
        state = status(place)  # another ask may have started it while this one waited for the lock
        if state is not None:
            why = mismatch(state, settings, catalog)
            if why is None:
                return client
            print(f"complm: restarting the background server: {why}.", file=e.stderr, flush=True)
            stop(place, state)
        if not _pulled(settings, catalog, reporter):
            return None  # offline and a model missing: this process says which, with its exit code
        _start(place, settings, e)
    return client


def _pulled(settings, catalog, reporter) -> bool:
    """Pull what a run may need here, with bars in this terminal, not silently in the server; whether all is there."""
    from complm_cli.cache.needs import models_needed, pull_missing
    from complm_cli.cache.store import Store
    from complm_cli.compose.modes import MODES

    store = Store(settings)
    models = list({m.name: m for mode in MODES for m in models_needed(catalog, mode=mode)}.values())
    pull_missing(store, models, reporter)
    return all(store.is_pulled(m) for m in models if m.pullable)


def server_flags(settings) -> dict:
    """The settings a new server starts with, resolved here: it runs from / and keeps no corpus of its own
    (each request names its corpora), so paths are absolute and corpora empty."""
    flags = {}
    for name in ("cache_dir", "data_dir", "catalog", "offline", "workers", "threads", "gpu_layers", "max_memory",
                 "node_timeout", "seed", "votes", "route_threshold", "hub_timeout", "stream_plan", "draft", "keep_alive", "idle_exit"):
        value = getattr(settings, name)
        if isinstance(value, Path):
            value = str(value.expanduser().resolve())
        if value is not None:
            flags[name] = value
    flags["corpora"] = []
    return flags


def _start(place: Place, settings, e) -> None:
    """Start a server and wait until it answers; Unavailable, with the reason from its log, if it does not."""
    read_end, write_end = os.pipe()
    env = dict(os.environ, COMPLM_CONFIG_DIR=str(Path(settings.config_dir).expanduser().resolve()))
    command = [sys.executable, "-m", "complm_cli", "_daemon", "--settings", json.dumps(server_flags(settings)),
               "--ready-fd", str(write_end)]
    fd = os.open(place.log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=fd, stderr=fd, pass_fds=(write_end,),
                                   start_new_session=True, cwd="/", env=env)
    except OSError as exc:
        os.close(read_end)
        raise Unavailable(f"The background server could not be started ({exc.strerror or exc})") from None
    finally:
        os.close(fd)
        os.close(write_end)
    # Said once and kept on the screen: a process now stays after this command, and this is how to end it.
    print("complm: starting a background server that keeps the models loaded (`complm stop` ends it).",
          file=e.stderr, flush=True)
    try:
        ready = _wait_ready(read_end, process)
    except BaseException:  # Ctrl-C while it starts: a half-started server is not left behind
        _end(process)
        raise
    finally:
        os.close(read_end)
    if not ready:
        _end(process)
        raise Unavailable(f"The background server did not start ({_last_line(place.log)}; its log: {place.log})")


def _wait_ready(read_end: int, process: subprocess.Popen) -> bool:
    deadline = time.monotonic() + START_TIMEOUT
    got = b""
    while time.monotonic() < deadline:
        readable, _, _ = select.select([read_end], [], [], 0.5)
        if readable:
            chunk = os.read(read_end, 64)
            if not chunk:  # the server closed its end without a word: it failed, its log says why
                return False
            got += chunk
            if b"ready" in got:
                return True
    return False


def _end(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _last_line(log: Path) -> str:
    try:
        lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        lines = []
    if not lines:
        return "it exited without a word"
    last = lines[-1]
    return last[len("complm: "):].rstrip(".") if last.startswith("complm: ") else last.rstrip(".")


def stop(place: Place, state: dict | None = None) -> int | None:
    """Stop the server (asked, then terminated, then killed): its pid, or None when none ran. Its socket goes too."""
    import httpx2

    pid = (state or {}).get("pid") or peer_pid(place)
    try:
        with _client(place)._http(timeout=STATUS_TIMEOUT) as http:
            http.post("/api/stop")
    except httpx2.HTTPError:
        pass  # hung, or gone already: the signals below see to it
    if pid:
        for sig in (None, signal.SIGTERM, signal.SIGKILL):
            if sig is not None:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    break
            deadline = time.monotonic() + (STOP_TIMEOUT if sig is None else 5)
            while alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if not alive(pid):
                break
    if place.socket.exists() and status_quietly(place) is None:
        try:
            place.socket.unlink()
        except OSError:
            pass
    return pid


def status_quietly(place: Place) -> dict | None:
    try:
        return status(place, timeout=1)
    except Unavailable:
        return {"hung": True}
