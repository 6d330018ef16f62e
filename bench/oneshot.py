"""One-shot `complm ask`, as a user types it, with and without a running server.

    python bench/oneshot.py [--runs 3]

Each question is asked in a new process four ways, alternating: composed
and direct (`--mode monolithic`) loading the models in the process, then
both again with `--server` against a `complm serve` this script starts
(default catalog and settings, models loaded once). Wall seconds, median of
--runs; a warm-up asks the server once in each mode first, so both models
are resident, as they are for a user whose server has answered before.
Needs the default
models in the cache.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import time

QUESTIONS = [
    "Who painted the Mona Lisa, and what is the chemical symbol for gold?",
    "What is the boiling point of water in Fahrenheit, and who wrote the novel 1984?",
    "In which country was the painter of The Starry Night born?",
]


# A COMPLM_SERVER of the user's would send the in-process runs to a server too.
ENV = {k: v for k, v in os.environ.items() if k not in ("COMPLM_SERVER", "COMPLM_SERVE_API_KEY")}


def ask(question: str, mode: str, server: str | None) -> float:
    # Without --server the models load in the process: the background server (bench/warm.py) is left out.
    argv = [sys.executable, "-m", "complm_cli", "ask", "--mode", mode, question] + (["--server", server] if server else ["--no-daemon"])
    t = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    opts = parser.parse_args()

    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "complm_cli", "serve", "--port", "0"], env=ENV,
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        line = proc.stderr.readline()
        match = re.search(r"listening on (http://\S+/v1)", line)
        if not match:
            sys.exit(f"complm serve did not start: {line.strip()} {proc.stderr.read()[-500:]}")
        server = match.group(1)
        for mode in ("parallel", "monolithic"):
            ask("What is 2 plus 2, and what is the capital of France?", mode, server)
        print(f"complm one-shot bench: {os.cpu_count()} CPUs; server up and warm in {time.perf_counter() - t:.1f} s\n")
        header = (f"{'question':52} {'composed':>9} {'direct':>7} {'ratio':>6} | {'--server composed':>17} {'direct':>7} "
                  f"{'ratio':>6} | {'composed, local/server':>22}")
        print(header)
        print("-" * len(header))
        rows = []
        for q in QUESTIONS:
            walls: dict[tuple[str, bool], list[float]] = {}
            for _ in range(opts.runs):
                for via in (False, True):
                    for mode in ("parallel", "monolithic"):
                        walls.setdefault((mode, via), []).append(ask(q, mode, server if via else None))
            m = {k: statistics.median(v) for k, v in walls.items()}
            row = (m["parallel", False], m["monolithic", False], m["parallel", True], m["monolithic", True])
            rows.append(row)
            short = q if len(q) <= 52 else q[:51] + "…"
            print(f"{short:52} {row[0]:>9.1f} {row[1]:>7.1f} {row[0] / row[1]:>6.2f} | {row[2]:>17.1f} {row[3]:>7.1f} "
                  f"{row[2] / row[3]:>6.2f} | {row[0] / row[2]:>22.2f}", flush=True)
        print("-" * len(header))
        med = [statistics.median(r[i] for r in rows) for i in range(4)]
        ratio = [statistics.median(r[a] / r[b] for r in rows) for a, b in ((0, 1), (2, 3), (0, 2))]  # of each row's ratio
        print(f"{'median':52} {med[0]:>9.1f} {med[1]:>7.1f} {ratio[0]:>6.2f} | {med[2]:>17.1f} {med[3]:>7.1f} "
              f"{ratio[1]:>6.2f} | {ratio[2]:>22.2f}")
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()


if __name__ == "__main__":
    main()
