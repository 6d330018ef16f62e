"""The model pool: resident workers within a memory budget, reused while idle, evicted least recently used.

A worker is held by one thread at a time (acquire, generate, release). Workers
of one local model are handles on one batched engine, whose memory they
declare once as a shared part; a remote expert's worker holds no model, and
what limits it is its endpoint, which takes at most `capacity` requests at
once, whichever experts of the catalog send them.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Callable

from complm_cli.cache.catalog import Expert
from complm_cli.cache.config import format_size
from complm_cli.compose.cancel import Cancelled, subscribe, wakes
from complm_cli.errors import ModelError
from complm_cli.experts.base import Worker, WorkerFactory

FOREIGN_CANCEL_POLL_S = 0.1  # a plain threading.Event cannot wake a waiter: look at it this often


class ModelPool:
    def __init__(self, factory: WorkerFactory, path_of: Callable[[Expert], Path], budget: int):
        self.factory, self.path_of, self.budget = factory, path_of, budget
        self._paths: dict[str, Path] = {}
        self._idle: "OrderedDict[int, Worker]" = OrderedDict()  # oldest first
        self._busy: dict[int, Worker] = {}
        self._since: dict[int, float] = {}  # when each idle worker was released (time.monotonic)
        self._cond = threading.Condition()
        self._closed = False
        self.loads = 0
        self.evictions = 0
        self.peak = 0

    @property
    def used(self) -> int:
        with self._cond:
            return self._memory([*self._idle.values(), *self._busy.values()])

    @staticmethod
    def _memory(workers) -> int:
        """Each worker's own bytes, plus each shared part (an engine, a model file) once while any holder is resident.

        Computed from who is resident now, so evicting the worker that first
        brought a shared part in never leaves the others under-counted."""
        shared = dict(w.shared for w in workers if w.shared)
        return sum(w.memory for w in workers) + sum(shared.values())

    def has_idle(self, expert_name: str) -> bool:
        with self._cond:
            return any(w.expert.name == expert_name for w in self._idle.values())

    def _endpoint_full(self, expert: Expert) -> bool:
        if expert.remote is None:
            return False
        busy = sum(1 for w in self._busy.values() if w.expert.remote is not None
                   and w.expert.remote.endpoint == expert.remote.endpoint)
        return busy >= expert.remote.max_parallel

    def _path(self, expert: Expert) -> Path | None:
        if expert.remote is not None:
            return None
        if expert.name not in self._paths:  # path_of reads the store's manifest: once per expert is enough
            self._paths[expert.name] = self.path_of(expert)
        return self._paths[expert.name]

    def acquire(self, expert: Expert, cancel=None) -> Worker:
        """A loaded worker of `expert`, held by the caller until `release`; waits while the endpoint
        is full or everything resident is busy; a cancel wakes the wait at once."""
        path = self._path(expert)
        unsubscribe = subscribe(cancel, self._notify)
        timeout = None if cancel is None or wakes(cancel) else FOREIGN_CANCEL_POLL_S
        try:
            with self._cond:
                worker, fresh = self._take(expert, path, cancel, timeout)
        finally:
            unsubscribe()
        if not fresh:
            return worker
        try:
            worker.load()
            self.loads += 1
        except BaseException:
            with self._cond:
                self._busy.pop(id(worker), None)
                self._cond.notify_all()
            raise
        return worker

    def _take(self, expert: Expert, path: Path | None, cancel, timeout: float | None) -> tuple[Worker, bool]:
        """Under the lock: an idle worker of `expert`, or a new one (True: still to load) once there is room for it."""
        fresh: Worker | None = None  # built once, however long the wait
        while True:
            if cancel is not None and cancel.is_set():
                raise Cancelled()
            if not self._endpoint_full(expert):
                for key, w in self._idle.items():
                    if w.expert.name == expert.name:
                        del self._idle[key]
                        self._since.pop(key, None)
                        self._busy[key] = w
                        return w, False
                if fresh is None:
                    fresh = self.factory(expert, path)
                    alone = self._memory([fresh])
                    if alone > self.budget:
                        raise ModelError(f"The model '{expert.name}' needs about {format_size(alone)}, more than the "
                                         f"memory budget of {format_size(self.budget)}; raise --max-memory.")
                if self._make_room(fresh):
                    self._busy[id(fresh)] = fresh
                    self.peak = max(self.peak, self._memory([*self._idle.values(), *self._busy.values()]))
                    return fresh, True
            self._cond.wait(timeout)  # a release (or a cancel) wakes it

    def _make_room(self, worker: Worker) -> bool:
        """Evict idle workers, oldest first, until `worker` fits; False (evicting nothing) where it cannot."""
        busy = list(self._busy.values())
        if self._memory([*busy, worker]) > self.budget:
            return False  # only a busy worker's release makes room: wait for it
        # An idle handle whose engine stays (a busy worker or the new one holds it) frees nothing:
        # evicting it would only close an engine that must load again at once.
        kept = {w.shared[0] for w in (*busy, worker) if w.shared}
        for key, old in list(self._idle.items()):  # oldest first
            if self._memory([*self._idle.values(), *busy, worker]) <= self.budget:
                break
            if old.shared and old.shared[0] in kept:
                continue
            del self._idle[key]
            self._since.pop(key, None)
            old.unload()
            self.evictions += 1
        return True

    def _notify(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def release(self, worker: Worker) -> None:
        with self._cond:
            key = id(worker)
            self._busy.pop(key, None)
            if self._closed:
                worker.unload()
            else:
                self._idle[key] = worker
                self._since[key] = time.monotonic()
            self._cond.notify_all()

    def expire(self, idle_for: float) -> list[str]:
        """Unload the models no run has used for `idle_for` seconds (a server's keep_alive); their names.

        A handle whose engine a busy worker still holds is left: unloading it frees nothing."""
        now = time.monotonic()
        with self._cond:
            kept = {w.shared[0] for w in self._busy.values() if w.shared}
            gone = []
            for key, w in list(self._idle.items()):
                if now - self._since.get(key, now) >= idle_for and not (w.shared and w.shared[0] in kept):
                    del self._idle[key]
                    self._since.pop(key, None)
                    w.unload()
                    gone.append(w.expert.name)
            return list(dict.fromkeys(gone))

    def models(self) -> list[dict]:
        """The models resident now, one entry per expert: its memory, GPU layers, whether a run uses it, and since
        when it has been idle (time.monotonic; None while in use)."""
        with self._cond:
            entries: dict[str, dict] = {}
            for busy, workers in ((True, self._busy), (False, self._idle)):
                for key, w in workers.items():
                    if w.expert.remote is not None:  # nothing of it is loaded here
                        continue
                    e = entries.setdefault(w.expert.name, {"name": w.expert.name, "workers": [], "busy": False,
                                                           "idle_since": None, "gpu_layers": w.gpu_layers})
                    e["workers"].append(w)
                    if busy:
                        e["busy"] = True
                    else:
                        since = self._since.get(key)
                        e["idle_since"] = since if e["idle_since"] is None else max(e["idle_since"], since or 0)
            for e in entries.values():
                e["memory"] = self._memory(e.pop("workers"))
                if e["busy"]:
                    e["idle_since"] = None
            return list(entries.values())

    def resident(self) -> list[str]:
        with self._cond:
            return [w.expert.name for w in (*self._busy.values(), *self._idle.values())]

    def close(self) -> None:
        """Unload idle workers now; a worker still busy in a thread is unloaded when it is released."""
        with self._cond:
            self._closed = True
            for w in self._idle.values():
                w.unload()
            self._idle.clear()
            self._since.clear()
