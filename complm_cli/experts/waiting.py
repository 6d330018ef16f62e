"""How llama.cpp's threads share a CPU that other processes use: how they wait, and how many there are.

llama.cpp (built with OpenMP here) has its threads spin at each barrier of a
decode step. On a quiet machine that is fastest. When another process holds
a core, a spinning thread takes turns with one the kernel has set aside, and
each step waits for it: with one of two cores busy, warm answers took 2.7 to
2.9 times their quiet time; with OMP_WAIT_POLICY=PASSIVE (threads sleep at a
barrier) 1.3 to 1.5 times, but 20 to 30% longer on a quiet machine
(bench/load.py). So before the first model loads, complm looks at how busy
other processes keep the CPU and has the threads sleep only then. The
OpenMP runtime reads the setting once, when it loads: a process decides
once (a server at its start). OMP_WAIT_POLICY set by the user (even empty:
OpenMP's own default) is left alone.

A process that lives on (the background server) sees load come and go after
it chose. So the number of threads a decode step uses follows the CPU too:
`CpuWatch` samples, every half second from the first decode on, how many cores
other processes keep busy, and the engines use only the cores left
(experts/llama.py). With one of two cores taken, one thread has nobody to
wait for at a barrier (bench/load.py --late).
"""

from __future__ import annotations

import os
import sys
import threading
import time

SAMPLE_S = 0.1  # how long the CPU is watched: a tenth of a second of start-up
BUSY_CORES = 0.5  # other processes keeping at least half a core busy: threads sleep at barriers
WATCH_S = 0.5  # how often a running process looks again

_chosen: str | None = None


def _busy_seconds() -> tuple[float, float]:
    """(CPU seconds all processes have been busy, this process's own), since boot and since it started."""
    with open("/proc/stat", encoding="ascii") as f:
        values = [int(v) for v in f.readline().split()[1:9]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle and iowait
    mine = os.times()
    return (sum(values) - idle) / os.sysconf("SC_CLK_TCK"), mine.user + mine.system


def _others(before: tuple[float, float], after: tuple[float, float], seconds: float) -> float:
    """Cores other processes kept busy between two readings of _busy_seconds: all busy time less this process's."""
    return max(0.0, (after[0] - before[0]) - (after[1] - before[1])) / seconds


def others_busy(sample_s: float = SAMPLE_S) -> float | None:
    """Cores that other processes kept busy over a short sample (from /proc/stat, less this process's own
    CPU time); None where the kernel does not say (not Linux)."""
    try:
        before = _busy_seconds()
        time.sleep(sample_s)
        return _others(before, _busy_seconds(), sample_s)
    except (OSError, ValueError, IndexError):
        return None


class CpuWatch:
    """Cores left to this process: how busy other processes kept the CPU, looked at every WATCH_S in a thread
    of its own from the first ask on. A load counts once two samples in a row saw it: a command that starts
    beside it (a `complm ask` importing its libraries) is not one."""

    def __init__(self, cores: int):
        self.cores = cores
        self._samples = (0.0, 0.0)  # the last two: cores other processes kept busy
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def free(self) -> int:
        """Cores other processes do not keep busy (at least one); all of them where the kernel does not say."""
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._watch, name="complm-cpu-watch", daemon=True)
                    self._thread.start()
        return max(1, self.cores - int(min(self._samples) + 0.5))

    def _watch(self) -> None:
        try:
            last, then = _busy_seconds(), time.monotonic()
            while True:
                time.sleep(WATCH_S)
                now, sample = time.monotonic(), _busy_seconds()
                self._samples = (self._samples[1], _others(last, sample, now - then))
                last, then = sample, now
        except (OSError, ValueError, IndexError):
            self._samples = (0.0, 0.0)  # the kernel does not say: every core


def settle() -> str:
    """Choose the wait policy, once, before llama.cpp loads; says what it chose and why (for `complm doctor`)."""
    global _chosen
    if _chosen is None:
        if "OMP_WAIT_POLICY" in os.environ:
            _chosen = f"{os.environ['OMP_WAIT_POLICY'] or 'OpenMP default'} (OMP_WAIT_POLICY)"
        elif "llama_cpp" in sys.modules:  # its OpenMP runtime has read the environment already
            _chosen = "spin (llama.cpp was loaded before complm could choose)"
        else:
            busy = others_busy()
            if busy is not None and busy >= BUSY_CORES:
                os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
                _chosen = f"sleep (other processes kept {busy:.1f} cores busy)"
            else:
                _chosen = "spin (the CPU was free)" if busy is not None else "spin"
    return _chosen


_watch: CpuWatch | None = None


def cpu_watch() -> CpuWatch:
    """The process's one CpuWatch (its engines share it)."""
    global _watch
    if _watch is None:
        from complm_cli.cache.config import cpu_count

        _watch = CpuWatch(cpu_count())
    return _watch
