"""Speed under load: the same questions quiet and with one core kept busy by another process.

Each variant runs in two fresh processes (OpenMP reads its settings once,
at load), one on a quiet machine and one with a spinning process started
before it: each loads the default experts, warms them on one question, then
asks each question directly (monolithic) and composed (parallel); the
ratio loaded/quiet of each is printed. Seeds are fixed, so quiet and loaded
runs write the same tokens.

    python bench/load.py > bench/load-results.txt
    python bench/load.py --variants spin,auto
    python bench/load.py --late --variants fixed,auto

With --late the spinning process starts after the models are warm, as load
comes to a background server that started on a quiet machine: the wait
policy was chosen then, and only the number of threads can follow the load
(experts/waiting.py CpuWatch). 'fixed' is that choice without CpuWatch
(every decode step on all the threads, as before it).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

QUESTIONS = [
    "What is the capital of Japan, and what is 15 times 4?",
    "Who wrote Pride and Prejudice, and in which year was it published?",
    "What is the boiling point of water in Fahrenheit?",
]
VARIANTS = {
    "spin": {"OMP_WAIT_POLICY": ""},  # OpenMP's own default: threads spin at a barrier (complm before bench/load.py)
    "auto": {},  # complm's choice (experts/waiting.py): sleep when other processes keep a core busy at start
    "passive": {"OMP_WAIT_POLICY": "PASSIVE"},  # threads always sleep at a barrier
    "fixed": {},  # auto, but always every thread: the thread count does not follow the load (before CpuWatch)
}
SPIN = "while True: pass"


def child(variant: str, loaded: bool, late: bool = False) -> None:
    from complm_cli.cache.config import load_settings
    from complm_cli.compose.session import Session
    from complm_cli.experts.waiting import CpuWatch, settle

    if variant == "fixed":
        CpuWatch.free = lambda self: self.cores
    session = Session(load_settings().replace(seed=0))
    spinner = None
    try:
        session.ask("What is 2 plus 2, and what is the capital of France?")  # load and warm every model
        if late and loaded:
            spinner = subprocess.Popen([sys.executable, "-c", SPIN])
            time.sleep(1.5)  # as a server that has been up a while would see it (two samples of CpuWatch)
        rows = []
        for q in QUESTIONS:
            for mode in ("monolithic", "parallel"):
                t = time.perf_counter()
                result = session.ask(q, mode=mode)
                rows.append({"variant": variant, "loaded": loaded, "mode": mode, "question": q,
                             "seconds": time.perf_counter() - t, "tokens": result.tokens["total"], "waiting": settle()})
        print(json.dumps(rows))
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()
        session.close()


def run_child(variant: str, loaded: bool, late: bool = False) -> list[dict]:
    """One process, quiet or with a spinning process beside it from before it starts (as a user's would be),
    or (late) from after its models are warm."""
    spinner = subprocess.Popen([sys.executable, "-c", SPIN]) if loaded and not late else None
    try:
        time.sleep(0.5 if spinner else 0)
        args = [sys.executable, __file__, "--child", variant] + (["--loaded"] if loaded else []) + (["--late"] if late else [])
        out = subprocess.run(args, env={**os.environ, **VARIANTS[variant]}, capture_output=True, text=True)
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip().splitlines()[-1:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--child")
    parser.add_argument("--loaded", action="store_true")
    parser.add_argument("--late", action="store_true", help="start the spinning process after the models are warm")
    args = parser.parse_args()
    if args.child:
        child(args.child, args.loaded, args.late)
        return
    when = "from after the models are warm" if args.late else "from before complm starts"
    print(f"{os.cpu_count()} cores; a spinning process takes one of them in the loaded runs, {when}")
    print("variant  mode        quiet s  loaded s  loaded/quiet (median over questions)  waiting chosen quiet / loaded")
    for variant in args.variants.split(","):
        quiet_rows, loaded_rows = run_child(variant, False, args.late), run_child(variant, True, args.late)
        for mode in ("monolithic", "parallel"):
            quiet = {r["question"]: r["seconds"] for r in quiet_rows if r["mode"] == mode}
            loaded = {r["question"]: r["seconds"] for r in loaded_rows if r["mode"] == mode}
            ratios = [loaded[q] / quiet[q] for q in quiet]
            print(f"{variant:8s} {mode:10s} {statistics.median(quiet.values()):8.1f} {statistics.median(loaded.values()):9.1f}"
                  f"  {statistics.median(ratios):.2f}x (each: {', '.join(f'{r:.1f}' for r in ratios)})"
                  f"  {quiet_rows[0]['waiting']} / {loaded_rows[0]['waiting']}", flush=True)


if __name__ == "__main__":
    main()
