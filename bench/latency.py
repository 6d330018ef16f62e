"""Latency of parallel, sequential and monolithic runs on multi-part questions.

    python bench/latency.py [--repeat 1] [--questions N] [--workers W]

Uses the default experts (pulled on first use). Each question is planned
once; parallel and sequential then run that same plan, so they differ only in
scheduling. Both wall times include the (shared) planning time, as a user
would see it; the `nodes` columns are the node phase alone, where the
scheduling difference lives. Monolithic is one model answering directly.

Prints, per question: nodes, the width of the widest level, wall time per
mode, and sequential/parallel (whole run and node phase); then the medians.
A warm-up question first loads every model, so that no mode pays for it.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

QUESTIONS = [
    # fan-outs (independent look-ups)
    ("fan-out", "What is the boiling point of water in Fahrenheit, and who wrote the novel 1984?"),
    ("fan-out", "Who painted the Mona Lisa, and what is the chemical symbol for gold?"),
    ("fan-out", "What is the capital of Canada, what is the largest planet in the solar system, and which Python keyword defines a function?"),
    ("fan-out", "How many legs does a spider have, and how many sides does a hexagon have?"),
    # HotpotQA train, comparison questions (../shared/data/hotpotqa_train_100_distractor)
    ("compare", "Are Christopher Nolan and Sathish Kalathil both film directors?"),
    ("compare", "Who is the oldest, Sid Haig or Vic Darchinyan?"),
    # chains (a later step needs an earlier answer)
    ("chain", "In which country was the painter of The Starry Night born?"),
    ("chain", "How many years passed between the end of World War II and the first crewed Moon landing?"),
    # MuSiQue train, 2-hop (../shared/data/musique_train_100_full)
    ("chain", "What is the name of the waterfall in the country where the Bubye River is found?"),
    ("chain", "Who was the first president of the association which published Journal of Psychotherapy Integration?"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=len(QUESTIONS), help="use the first N questions")
    parser.add_argument("--workers", type=int, default=None, help="parallel workers (default: complm's)")
    opts = parser.parse_args()

    from complm_cli.config import load_settings
    from complm_cli.pipeline import Session

    settings = load_settings()
    if opts.workers:
        settings = settings.replace(workers=opts.workers)
    session = Session(settings, modes=("parallel", "sequential", "monolithic"))
    print(f"complm latency bench: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"threads {settings.threads}, workers {settings.worker_count()}, planner {session.planner.name}, "
          f"monolithic {session.fallback.name}")
    t = time.perf_counter()
    session.ask("What is 2 plus 2, and what is the capital of France?", mode="parallel")  # loads every model
    session.ask("What is 3 plus 3?", mode="monolithic")
    print(f"warm-up {time.perf_counter() - t:.1f} s\n")

    header = (f"{'shape':8} {'question':58} {'nodes':>5} {'width':>5} {'plan tok':>8} {'plan s':>6} {'agg':>3} {'par s':>7} {'seq s':>7} "
              f"{'mono s':>7} {'seq/par':>8} {'nodes seq/par':>13} {'par/mono':>8}")
    print(header)
    print("-" * len(header))
    rows = []
    for shape, question in QUESTIONS[: opts.questions]:
        plan = session.plan(question)
        routes = session.route(plan)
        par = session.ask(question, mode="parallel", plan=plan, routes=routes)
        seq = session.ask(question, mode="sequential", plan=plan, routes=routes)
        mono = session.ask(question, mode="monolithic")
        ratio = seq.timings["wall_s"] / par.timings["wall_s"]
        node_ratio = seq.timings["execute_s"] / par.timings["execute_s"] if par.timings["execute_s"] else float("nan")
        direct = par.timings["wall_s"] / mono.timings["wall_s"]
        rows.append((len(plan.nodes), plan.width, par.timings["wall_s"], seq.timings["wall_s"], mono.timings["wall_s"], ratio, node_ratio,
                     plan.seconds, plan.tokens, direct, shape))
        q = question if len(question) <= 58 else question[:57] + "…"
        print(f"{shape:8} {q:58} {len(plan.nodes):>5} {plan.width:>5} {plan.tokens:>8} {plan.seconds:>6.1f} {'yes' if par.aggregated else 'no':>3} "
              f"{par.timings['wall_s']:>7.1f} {seq.timings['wall_s']:>7.1f} "
              f"{mono.timings['wall_s']:>7.1f} {ratio:>8.2f} {node_ratio:>13.2f} {direct:>8.1f}", flush=True)
    session.close()
    med = [statistics.median(col) for col in list(zip(*rows))[:10]]
    print("-" * len(header))
    print(f"{'median':8} {'':58} {med[0]:>5.0f} {med[1]:>5.0f} {med[8]:>8.0f} {med[7]:>6.1f} {'':>3} {med[2]:>7.1f} {med[3]:>7.1f} "
          f"{med[4]:>7.1f} {med[5]:>8.2f} {med[6]:>13.2f} {med[9]:>8.1f}")
    wide = [r for r in rows if r[1] > 1]
    if wide:
        print(f"\nquestions with a level of 2+ nodes: {len(wide)}; median seq/par {statistics.median(r[5] for r in wide):.2f}, "
              f"node phase {statistics.median(r[6] for r in wide):.2f}")
    print(f"median planning time {statistics.median(r[7] for r in rows):.1f} s; "
          f"median parallel/monolithic {statistics.median(r[9] for r in rows):.1f}x; "
          f"on two-part fan-outs {statistics.median(r[9] for r in rows if r[10] == 'fan-out' and r[0] == 2):.1f}x")


if __name__ == "__main__":
    sys.exit(main())
