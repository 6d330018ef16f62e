"""How llama.cpp's threads wait at a barrier: chosen once a process, before its OpenMP runtime starts.

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
"""

from __future__ import annotations

import os
import sys
import time

SAMPLE_S = 0.1  # how long the CPU is watched: a tenth of a second of start-up
BUSY_CORES = 0.5  # other processes keeping at least half a core busy: threads sleep at barriers

_chosen: str | None = None


def others_busy(sample_s: float = SAMPLE_S) -> float | None:
    """Cores that other processes kept busy over a short sample (from /proc/stat, less this process's own
    CPU time); None where the kernel does not say (not Linux)."""

    def busy_seconds() -> float:
        with open("/proc/stat", encoding="ascii") as f:
            values = [int(v) for v in f.readline().split()[1:9]]
        idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle and iowait
        return (sum(values) - idle) / os.sysconf("SC_CLK_TCK")

    try:
        start, mine = busy_seconds(), os.times()
        time.sleep(sample_s)
        end, mine_end = busy_seconds(), os.times()
    except (OSError, ValueError, IndexError):
        return None
    own = (mine_end.user + mine_end.system) - (mine.user + mine.system)
    return max(0.0, end - start - own) / sample_s


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
