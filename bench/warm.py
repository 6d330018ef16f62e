"""One-shot `complm ask` through the background server: the first (which starts it) against the warm ones.

    python bench/warm.py [--runs 3] [--cold]

What a user in a terminal gets. For each two-part question, --runs rounds
of: `complm stop`, then in new processes, as typed: the first `complm ask`
(it starts the server, which loads the models), the same question again
(warm, composed), and `--mode monolithic` (warm, direct), each twice. Then
the same composed question with `--no-daemon` (models loaded in the
process, as before the server), for scale. The server lives in a runtime
folder of this script's own, so a server of the user's is left alone; the
models come from the user's cache (the default experts, pulled). Wall
seconds, median over the rounds; ratios are taken per question, then the
median. The files of the models are in the OS's cache after the first
round; with --cold (root on Linux) the OS drops its file cache before each
first ask, as after a reboot, so that ask also reads the models, torch and
complm from disk.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

QUESTIONS = [
    "Who painted the Mona Lisa, and what is the chemical symbol for gold?",
    "What is the boiling point of water in Fahrenheit, and who wrote the novel 1984?",
    "What is the capital of Australia, and how many legs does a spider have?",
]


def complm(env: dict, *args: str) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "complm_cli", *args], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, env=env)
    return time.perf_counter() - t


def drop_file_cache() -> None:
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cold", action="store_true", help="drop the OS's file cache before each first ask (root)")
    opts = parser.parse_args()
    runtime = tempfile.mkdtemp(prefix="cw")
    env = {k: v for k, v in os.environ.items() if k not in ("COMPLM_SERVER", "COMPLM_DAEMON")}
    env["XDG_RUNTIME_DIR"] = runtime
    print(f"complm warm one-shot bench: {os.cpu_count()} CPUs, {opts.runs} rounds, "
          f"{'file cache dropped before each first ask' if opts.cold else 'files in the OS cache'}\n")
    header = (f"{'question':52} {'first':>6} {'warm composed':>13} {'warm direct':>11} {'no server':>9} | "
              f"{'first/warm':>10} {'composed/direct':>15}")
    print(header)
    print("-" * len(header))
    rows = []
    try:
        for q in QUESTIONS:
            walls: dict[str, list[float]] = {}
            for _ in range(opts.runs):
                complm(env, "stop")
                if opts.cold:
                    drop_file_cache()
                walls.setdefault("first", []).append(complm(env, "ask", q))
                for _ in range(2):
                    walls.setdefault("warm", []).append(complm(env, "ask", q))
                    walls.setdefault("direct", []).append(complm(env, "ask", "--mode", "monolithic", q))
                walls.setdefault("local", []).append(complm(env, "ask", "--no-daemon", q))
            m = {k: statistics.median(v) for k, v in walls.items()}
            row = (m["first"], m["warm"], m["direct"], m["local"])
            rows.append(row)
            short = q if len(q) <= 52 else q[:51] + "…"
            print(f"{short:52} {row[0]:>6.1f} {row[1]:>13.1f} {row[2]:>11.1f} {row[3]:>9.1f} | "
                  f"{row[0] / row[1]:>10.2f} {row[1] / row[2]:>15.2f}", flush=True)
    finally:
        complm(env, "stop")
    print("-" * len(header))
    med = [statistics.median(r[i] for r in rows) for i in range(4)]
    first_warm = statistics.median(r[0] / r[1] for r in rows)
    composed_direct = statistics.median(r[1] / r[2] for r in rows)
    print(f"{'median':52} {med[0]:>6.1f} {med[1]:>13.1f} {med[2]:>11.1f} {med[3]:>9.1f} | "
          f"{first_warm:>10.2f} {composed_direct:>15.2f}")
    print(f"\nwarm one-shot is {first_warm:.2f}x faster than the first (goal: at least 3x); "
          f"warm composed/direct {composed_direct:.2f}x (goal: at most 2x); "
          f"without the server a composed one-shot takes {statistics.median(r[3] / r[1] for r in rows):.2f}x the warm one")


if __name__ == "__main__":
    main()
