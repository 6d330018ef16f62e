"""The background server's housekeeping: unload what no run has used for `keep_alive`, exit after `idle_exit`.

It also answers `complm ps` (`status`) and `complm stop`. A request may set
keep_alive for what follows (`ask --keep-alive 1h`), as Ollama's do: the
last one given holds.
"""

from __future__ import annotations

import os
import sys
import threading
import time

CHECK_S = 1.0  # how often the keeper looks; a model stays at most this much past its time


class Keeper:
    def __init__(self, session, *, keep_alive: float, idle_exit: float, options: dict, build: str):
        self.session, self.runs = session, None
        self.keep_alive, self.idle_exit = keep_alive, idle_exit
        self.options, self.build = options, build
        self.started = time.time()
        self.exit_reason: str | None = None
        self._stop = threading.Event()
        self._shutdown = lambda: None  # set by serve(): ends the server as Ctrl-C would

    def attach(self, runs, shutdown) -> None:
        """Start keeping house for a server whose runs are `runs`; `shutdown` ends it."""
        self.runs, self._shutdown = runs, shutdown
        threading.Thread(target=self._loop, name="complm-keeper", daemon=True).start()

    def stop(self, reason: str = "stopped by `complm stop`") -> None:
        self.exit_reason = reason
        self._stop.set()
        self._shutdown()

    def _loop(self) -> None:
        while not self._stop.wait(CHECK_S):
            self.tick()

    def tick(self) -> None:
        idle = self.runs.idle_for()
        if idle is None:
            return
        if self.keep_alive >= 0:
            gone = self.session.pool.expire(self.keep_alive)
            if gone:
                print(f"complm server: unloaded {', '.join(gone)} (unused for {self.keep_alive:g} s)", file=sys.stderr, flush=True)
        if idle >= self.idle_exit:
            self.stop(f"no request for {self.idle_exit:g} s")

    def status(self) -> dict:
        """What `complm ps` shows: the server, and each model resident now with until when it stays."""
        from complm_cli import __version__

        now_wall, now = time.time(), time.monotonic()
        models = []
        for m in self.session.pool.models():
            if m["busy"]:
                until = "in use"
            elif self.keep_alive < 0:
                until = "forever"
            else:
                until = now_wall + max(0.0, m["idle_since"] + self.keep_alive - now)
            models.append({"name": m["name"], "memory": m["memory"], "gpu_layers": m["gpu_layers"], "until": until})
        idle = self.runs.idle_for()
        return {"version": __version__, "build": self.build, "pid": os.getpid(), "started": self.started,
                "options": self.options, "keep_alive": self.keep_alive, "idle_exit": self.idle_exit,
                "running": idle is None, "exits_at": None if idle is None else now_wall + max(0.0, self.idle_exit - idle),
                "embedder": self.session.catalog.embedder.name, "models": models}
