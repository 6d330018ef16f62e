"""Start-up time of `complm --help` (and `list`, `pull --help`), and what they import.

    python bench/startup.py [--runs 10]

Prints the median wall time of each command in a fresh interpreter, the
number of modules it imported, the top-level packages among them, and
whether any heavy ML module (torch, sentence_transformers, llama_cpp,
huggingface_hub, transformers) was imported. The figure for `--help` goes in
the README.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HEAVY = ("torch", "sentence_transformers", "llama_cpp", "huggingface_hub", "transformers", "numpy", "networkx")

PROBE = """
import sys, json, io, contextlib
sys.argv = ["complm", *json.loads(sys.argv[1])]
from complm_cli.cli.app import main
out = io.StringIO()
try:
    with contextlib.redirect_stdout(out):
        main()
except SystemExit:
    pass
print(json.dumps(sorted(sys.modules)))
"""

COMMANDS = (["--help"], ["list"], ["pull", "--help"], ["ask", "--help"])


def run(args: list[str], runs: int, env: dict) -> tuple[float, list[str]]:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "complm_cli", *args], capture_output=True, env=env, check=True)
        times.append(time.perf_counter() - t)
    probe = subprocess.run([sys.executable, "-c", PROBE, json.dumps(args)], capture_output=True, text=True, env=env, check=True)
    modules = json.loads(probe.stdout.strip().splitlines()[-1])
    return statistics.median(times), modules


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "COMPLM_CACHE_DIR": tmp, "COMPLM_CONFIG_DIR": tmp}
        t = time.perf_counter()
        for _ in range(opts.runs):
            subprocess.run([sys.executable, "-c", "pass"], check=True, env=env)
        bare = (time.perf_counter() - t) / opts.runs
        print(f"python -c pass: {bare:.3f} s (the interpreter alone)")
        for args in COMMANDS:
            seconds, modules = run(args, opts.runs, env)
            tops = sorted({m.split(".")[0] for m in modules if not m.startswith("_")})
            heavy = [h for h in HEAVY if h in modules]
            print(f"\ncomplm {' '.join(args)}: median {seconds:.3f} s over {opts.runs} runs, {len(modules)} modules")
            print(f"  heavy modules imported: {', '.join(heavy) or 'none'}")
            print(f"  top-level packages: {', '.join(tops)}")


if __name__ == "__main__":
    main()
