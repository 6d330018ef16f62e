"""Latency of composed runs against the direct answer, on multi-part questions.

    python bench/latency.py [--questions N] [--workers W]

Uses the default experts (pulled on first use). Per question:

- `par`: `complm ask` as a user runs it: the plan streams into execution
  (steps start while the planner writes), nodes of one model share one
  batched engine. `ttft` is the time to the answer's first token (the
  aggregator's, or the first token of a node whose text is the answer).
- `seq/par`: `complm ask --mode sequential` as a user runs it (the whole
  plan first, then one node at a time) against the `par` run above.
- `same plan`: that question's plan run again, one node at a time against
  all at once, neither streaming: what running nodes at once gains alone,
  whole run (planning counted in both) and node phase.
- `mono`: the planner's model answering directly; `par/mono` is composed/direct,
  and `tok/mono` the tokens the composed run generated (plan, nodes, aggregation)
  over the direct answer's: on a CPU, where decoding several sequences at once
  gains little, the time ratio follows it.

Then planning with the prompt cache cold (no prefix in memory or on disk),
warm from disk (a new process), and warm in memory. A warm-up question
first loads every model, so that no mode pays for it.

Last, what a user of the CLI sees: `complm ask` on a two-part fan-out in a
fresh process each time, composed against `--mode monolithic` (median of
three), where loading the models and importing sentence-transformers count.
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
    ("fan-out", "What is the capital of Japan, who wrote Hamlet, and what is the freezing point of water in Celsius?"),
    ("fan-out", "Who discovered penicillin, what is the largest ocean on Earth, and how many continents are there?"),
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


def _first_answer_token(result, times: dict) -> float | None:
    """Seconds from the start to the first token of the answer's text."""
    if "answer" in times:
        return times["answer"]
    sinks = {n.id for n in result.plan.nodes} - {d for n in result.plan.nodes for d in n.depends_on}
    firsts = [times[("node", i)] for i in sinks if ("node", i) in times]
    return min(firsts) if firsts else None


def timed_ask(session, question: str, **kwargs):
    from complm_cli.events import AnswerToken, NodeToken

    times: dict = {}
    start = time.perf_counter()

    def listen(event) -> None:
        now = time.perf_counter() - start
        if isinstance(event, AnswerToken):
            times.setdefault("answer", now)
        elif isinstance(event, NodeToken):
            times.setdefault(("node", event.node_id), now)

    result = session.ask(question, on_event=listen, **kwargs)
    return result, _first_answer_token(result, times)


def planning_cache(session, questions: list[str]) -> tuple[float, float, float]:
    """Median planning seconds: cold (no cached prefix), warm from disk, warm in memory."""
    engines = session.pool.factory.local.engines
    states = session.settings.cache_dir / "prompt-states"
    cold, disk, memory = [], [], []
    for q in questions:
        for e in engines.loaded():
            e.forget_prefix()
        for f in states.glob(f"{session.planner.name}-*.seqstate"):
            f.unlink()
        t = time.perf_counter(); session.plan(q); cold.append(time.perf_counter() - t)
        for e in engines.loaded():
            e.forget_prefix()
        t = time.perf_counter(); session.plan(q); disk.append(time.perf_counter() - t)
        t = time.perf_counter(); session.plan(q); memory.append(time.perf_counter() - t)
    return statistics.median(cold), statistics.median(disk), statistics.median(memory)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=len(QUESTIONS), help="use the first N questions")
    parser.add_argument("--workers", type=int, default=None, help="parallel workers (default: complm's)")
    opts = parser.parse_args()

    from complm_cli.cache.config import load_settings
    from complm_cli.compose.session import Session

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
    for expert in session.routable:  # every model a step may be routed to, not only those the warm-up used
        if expert.kind == "llm" and expert.remote is None:
            session.pool.release(session.pool.acquire(expert))
    print(f"warm-up {time.perf_counter() - t:.1f} s\n")

    header = (f"{'shape':8} {'question':50} {'nodes':>5} {'plan tok':>8} {'plan s':>6} {'overlap':>7} {'agg':>3} {'ttft':>5} "
              f"{'par s':>6} {'seq s':>6} {'mono s':>6} {'mono ttft':>9} {'par/mono':>8} {'tok/mono':>8} {'seq/par':>7} {'same plan':>9} {'nodes':>5}")
    print(header)
    print("-" * len(header))
    rows = []
    for shape, question in QUESTIONS[: opts.questions]:
        par, ttft = timed_ask(session, question, mode="parallel")
        plan, routes = par.plan, par.routes
        given = session.ask(question, mode="parallel", plan=plan, routes=routes)
        seq = session.ask(question, mode="sequential", plan=plan, routes=routes)
        own = session.ask(question, mode="sequential")  # plans for itself, as `--mode sequential` does
        mono, mono_ttft = timed_ask(session, question, mode="monolithic")
        user_ratio = own.timings["wall_s"] / par.timings["wall_s"]
        ratio = seq.timings["wall_s"] / given.timings["wall_s"]
        node_ratio = seq.timings["execute_s"] / given.timings["execute_s"] if given.timings["execute_s"] else float("nan")
        direct = par.timings["wall_s"] / mono.timings["wall_s"]
        tok_ratio = par.tokens["total"] / max(1, mono.tokens["total"])
        rows.append(dict(shape=shape, nodes=len(plan.nodes), width=plan.width, par=par.timings["wall_s"], mono=mono.timings["wall_s"],
                         ratio=ratio, node_ratio=node_ratio, user_ratio=user_ratio, tok_ratio=tok_ratio, seq=own.timings["wall_s"],
                         plan_s=plan.seconds, plan_tok=plan.tokens, direct=direct,
                         ttft=ttft or float("nan"), mono_ttft=mono_ttft or float("nan"), overlap=par.timings.get("overlap_s", 0.0)))
        q = question if len(question) <= 50 else question[:49] + "…"
        print(f"{shape:8} {q:50} {len(plan.nodes):>5} {plan.tokens:>8} {plan.seconds:>6.1f} {rows[-1]['overlap']:>7.1f} "
              f"{'yes' if par.aggregated else 'no':>3} {rows[-1]['ttft']:>5.1f} {par.timings['wall_s']:>6.1f} "
              f"{own.timings['wall_s']:>6.1f} {mono.timings['wall_s']:>6.1f} {rows[-1]['mono_ttft']:>9.1f} {direct:>8.2f} {tok_ratio:>8.2f} "
              f"{user_ratio:>7.2f} {ratio:>9.2f} {node_ratio:>5.2f}", flush=True)
    print("-" * len(header))
    med = {k: statistics.median(r[k] for r in rows) for k in ("nodes", "plan_tok", "plan_s", "overlap", "ttft", "par", "seq", "mono", "mono_ttft",
                                                               "direct", "tok_ratio", "user_ratio", "ratio", "node_ratio")}
    print(f"{'median':8} {'':50} {med['nodes']:>5.0f} {med['plan_tok']:>8.0f} {med['plan_s']:>6.1f} {med['overlap']:>7.1f} {'':>3} "
          f"{med['ttft']:>5.1f} {med['par']:>6.1f} {med['seq']:>6.1f} {med['mono']:>6.1f} {med['mono_ttft']:>9.1f} {med['direct']:>8.2f} {med['tok_ratio']:>8.2f} "
          f"{med['user_ratio']:>7.2f} {med['ratio']:>9.2f} {med['node_ratio']:>5.2f}")

    def median_of(pick, key):
        chosen = [r[key] for r in rows if pick(r)]
        return f"{statistics.median(chosen):.2f} (n={len(chosen)})" if chosen else "n/a"

    two = lambda r: r["shape"] == "fan-out" and r["nodes"] == 2  # noqa: E731
    print(f"\ncomposed/direct median on two-part fan-outs: {median_of(two, 'direct')}; tokens {median_of(two, 'tok_ratio')}")
    for label, pick in (("on three-part fan-outs", lambda r: r["width"] >= 3), ("where a level has 2+ nodes", lambda r: r["width"] >= 2)):
        print(f"sequential/parallel median {label}: as each mode runs {median_of(pick, 'user_ratio')}; same plan, "
              f"whole run {median_of(pick, 'ratio')}, node phase {median_of(pick, 'node_ratio')}")
    cold, disk, memory = planning_cache(session, [q for _, q in QUESTIONS[:3]])
    print(f"planning, median of 3: cold {cold:.2f} s, warm from disk {disk:.2f} s ({cold / disk:.1f}x), "
          f"warm in memory {memory:.2f} s ({cold / memory:.1f}x)")
    session.close()
    one_shot(QUESTIONS[1][1])


def one_shot(question: str, runs: int = 3) -> None:
    """Wall seconds of `complm ask` in a new process, composed and direct, alternating."""
    import subprocess

    walls: dict[str, list[float]] = {"parallel": [], "monolithic": []}
    for _ in range(runs):
        for mode in walls:
            t = time.perf_counter()
            subprocess.run([sys.executable, "-m", "complm_cli", "ask", "--mode", mode, question],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            walls[mode].append(time.perf_counter() - t)
    par, mono = statistics.median(walls["parallel"]), statistics.median(walls["monolithic"])
    print(f"one-shot `complm ask` (new process, models loaded each time), median of {runs}: "
          f"composed {par:.1f} s, direct {mono:.1f} s ({par / mono:.2f}x)")


if __name__ == "__main__":
    sys.exit(main())
