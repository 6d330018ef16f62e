"""Experts in this process against experts on their own llama.cpp servers, sequential and parallel.

    python bench/remote.py [--model smollm2-135m] [--max-tokens 48] [--server-threads 1]

Three experts (geography, science, arithmetic), all backed by one model file
so that only where they run differs. Each question is a fixed fan-out plan of
three nodes, one per expert; the planner and the aggregator are left out,
since they run the same way in every setup. Four setups run each plan:

- local: every expert is a llama.cpp worker in this process (the weights are
  mapped once and shared; one Llama context per running node);
- remote: each expert on its own `python -m llama_cpp.server` process on
  127.0.0.1 (a RemoteWorker per node, `max_parallel = 1`, as that server
  answers one request at a time);

each with `workers = 1` (sequential) and `workers = 3` (parallel). Setups
alternate within each round, so load from other programs spreads over all
of them, and the fastest of `--repeat` rounds counts. Prints the node-phase
wall time of each, and the ratios, then medians.
Every server gets `--server-threads` threads (default 1: three servers on a
2-core machine already compete for the cores).

Run it on an otherwise idle machine: on 2 cores, llama.cpp decoding with 2
threads slowed down 20 to 45 times here whenever another program kept one
core busy (its threads wait for each other at every step), while 1-thread
decoding did not, in a spot check; `--verbose` shows every round, so a slow
one is easy to see.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

EXPERTS = {
    "geo": ["geography", "capitals", "rivers and continents"],
    "science": ["physics", "chemistry", "biology"],
    "math": ["arithmetic", "multiplication", "division"],
}
QUESTIONS = [  # one sub-query per expert, in the order of EXPERTS
    ("What is the capital of Japan?", "What is the chemical symbol for gold?", "What is 12 times 12?"),
    ("Which river flows through Paris?", "Which planet is known as the red planet?", "What is 100 divided by 4?"),
    ("What is the largest ocean on Earth?", "What gas do plants absorb from the air?", "What is the square root of 81?"),
    ("On which continent is Kenya?", "At what temperature does water boil in Celsius?", "What is 7 plus 15?"),
]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model_path, threads: int, n_ctx: int):
    port = free_port()
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(model_path), "--host", "127.0.0.1",
                             "--port", str(port), "--model_alias", "bench", "--n_threads", str(threads),
                             "--n_threads_batch", str(threads), "--n_ctx", str(n_ctx)], stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"llama_cpp.server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/models", timeout=2):
                return proc, url
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit("llama_cpp.server did not start within 180 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m", help="the catalog model behind every expert (pulled if missing)")
    parser.add_argument("--max-tokens", type=int, default=48, help="per node")
    parser.add_argument("--server-threads", type=int, default=1, help="threads of each llama_cpp.server")
    parser.add_argument("--repeat", type=int, default=3, help="runs per question and setup; the fastest counts")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads of the local setups (default: complm's)")
    parser.add_argument("--questions", type=int, default=len(QUESTIONS), help="use the first N questions")
    parser.add_argument("--verbose", action="store_true", help="print every run, node by node, on stderr")
    opts = parser.parse_args()

    from complm_cli.experts import default_factory
    from complm_cli.cache.catalog import RemoteSpec, load_catalog
    from complm_cli.cache.config import load_settings
    from complm_cli.compose.dag import Node, Plan
    from complm_cli.compose.execute import run_plan
    from complm_cli.compose.pool import ModelPool
    from complm_cli.compose.records import RunOptions
    from complm_cli.cache.store import Store

    settings = load_settings()
    if opts.threads:
        settings = settings.replace(threads=opts.threads)
    store = Store(settings)
    base = load_catalog().get(opts.model)
    store.pull(base)
    path = store.require(base)
    n_ctx = base.generation.n_ctx
    local = {name: dataclasses.replace(base, name=name, domains=tuple(d)) for name, d in EXPERTS.items()}

    t = time.perf_counter()
    servers = [start_server(path, opts.server_threads, n_ctx) for _ in EXPERTS]
    started = time.perf_counter() - t
    remote = {name: dataclasses.replace(e, remote=RemoteSpec(url, "bench", max_parallel=1, timeout=300))
              for (name, e), (_, url) in zip(local.items(), servers)}
    pool = ModelPool(default_factory(settings), lambda e: path, settings.memory_budget())

    def run(question: tuple[str, ...], experts: dict, workers: int) -> float:
        plan = Plan(question=" ".join(question), nodes=[Node(i + 1, q) for i, q in enumerate(question)])
        routed = {i + 1: experts[name] for i, name in enumerate(EXPERTS)}
        options = RunOptions(workers=workers, threads=settings.threads, max_tokens=opts.max_tokens, temperature=0.0,
                             seed=1, node_timeout=600)
        execution = run_plan(plan, routed, pool, options)
        if opts.verbose:
            nodes = " ".join(f"{r.expert}:{r.started:.2f}+{r.seconds:.2f}s/{r.tokens}" for r in execution.results.values())
            print(f"  {'remote' if experts is remote else 'local'} workers={workers}: {execution.seconds:.2f} s ({nodes})",
                  file=sys.stderr, flush=True)
        bad = [r for r in execution.results.values() if r.status != "done"]
        if bad:
            raise SystemExit(f"node {bad[0].id} {bad[0].status}: {bad[0].reason}")
        return execution.seconds

    setups = [("local", local, 1), ("local", local, 3), ("remote", remote, 1), ("remote", remote, 3)]
    print(f"complm remote bench: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, model {opts.model} "
          f"behind all {len(EXPERTS)} experts, {opts.max_tokens} tokens per node, local threads {settings.threads} "
          f"(shared by running nodes), {len(servers)} llama_cpp.server processes with {opts.server_threads} thread(s) each "
          f"(started in {started:.1f} s); load average {os.getloadavg()[0]:.1f} before the run")
    t = time.perf_counter()
    for _, experts, workers in setups:  # loads every local context and warms every server
        run(QUESTIONS[0], experts, workers)
    print(f"warm-up {time.perf_counter() - t:.1f} s; seconds of the node phase (3 nodes per question), "
          f"fastest of {opts.repeat} runs (other programs' load only ever adds time)\n")

    header = f"{'question':42} {'local seq':>9} {'local par':>9} {'remote seq':>10} {'remote par':>10} {'local seq/par':>13} {'remote seq/par':>14} {'remote/local par':>16}"
    print(header)
    print("-" * len(header))
    rows = []
    try:
        for question in QUESTIONS[: opts.questions]:
            times = [[] for _ in setups]
            for _ in range(opts.repeat):
                for i, (_, experts, workers) in enumerate(setups):
                    times[i].append(run(question, experts, workers))
            ls, lp, rs, rp = (min(t) for t in times)
            rows.append((ls, lp, rs, rp, ls / lp, rs / rp, rp / lp))
            q = " / ".join(question)
            q = q if len(q) <= 42 else q[:41] + "…"
            print(f"{q:42} {ls:>9.2f} {lp:>9.2f} {rs:>10.2f} {rp:>10.2f} {ls / lp:>13.2f} {rs / rp:>14.2f} {rp / lp:>16.2f}", flush=True)
    finally:
        pool.close()
        for proc, _ in servers:
            proc.kill()
            proc.wait()
    med = [statistics.median(c) for c in zip(*rows)]
    print("-" * len(header))
    print(f"{'median':42} {med[0]:>9.2f} {med[1]:>9.2f} {med[2]:>10.2f} {med[3]:>10.2f} {med[4]:>13.2f} {med[5]:>14.2f} {med[6]:>16.2f}")


if __name__ == "__main__":
    sys.exit(main())
