"""`complm eval`: accuracy and latency of the three modes on a QA dataset."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import typer

from complm_cli.cli.common import CatalogOpt, CorpusOpt, ExpertOpt, JsonOpt, OfflineOpt, VotesOpt, env, handles_errors
from complm_cli.errors import UsageError


def _check_writable(out: Path) -> None:
    """Found before the first question runs, not after it."""
    from complm_cli.errors import storage_error

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("a"):
            pass
    except OSError as exc:
        raise storage_error(exc, "Cannot write the --out file") from None


@handles_errors
def evaluate(
    dataset: Path = typer.Argument(None, help="JSONL (or JSON array) of objects with a question and a gold answer.", dir_okay=False),
    sample: bool = typer.Option(False, "--sample", help="Use the 30-question sample set shipped with complm."),
    mode: str = typer.Option("parallel,sequential,monolithic", "--mode", "-m", help="Comma-separated modes to compare."),
    limit: int = typer.Option(None, "--limit", "-n", min=1, help="Only the first N questions."),
    out: Path = typer.Option(None, "--out", "-o", help="Write one JSON line per question and mode; a rerun skips what is there.", dir_okay=False),
    question_field: str = typer.Option(None, "--question-field", help="The field holding the question."),
    answer_field: str = typer.Option(None, "--answer-field", help="The field holding the gold answer(s)."),
    monolithic_expert: str = typer.Option(None, "--monolithic-expert", help="The model of monolithic mode (default: the largest general model pulled)."),
    expert: str = ExpertOpt,
    workers: int = typer.Option(None, "--workers", "-w", min=1, help="Nodes that may run at once in parallel mode."),
    seed: int = typer.Option(None, "--seed", help="Sampling seed."),
    votes: int = VotesOpt,
    own_plans: bool = typer.Option(False, "--own-plans", help="Each mode plans for itself, as `complm ask` does (parallel streams its plan); "
                                   "by default parallel and sequential share one plan."),
    as_json: bool = JsonOpt,
    offline: bool = OfflineOpt,
    catalog: Path = CatalogOpt,
    corpus: list[str] = CorpusOpt,
) -> None:
    """Measure exact match, F1 and latency of parallel, sequential and monolithic runs."""
    from complm_cli.evaluate import run as ev
    from complm_cli.cli.question import prepare
    from complm_cli.cache.config import format_size
    from complm_cli.evaluate.datasets import read_dataset

    if sample == (dataset is not None):
        raise UsageError("Give a dataset file or --sample (one of them).")
    modes = ev.parse_modes(mode)
    path = ev.sample_path() if sample else dataset
    examples = read_dataset(path, question_field, answer_field, limit)
    if out is not None:
        _check_writable(out)
    e = env()
    session = prepare(catalog, offline, expert, modes, e, monolithic=monolithic_expert, workers=workers, seed=seed,
                      votes=votes, corpora=corpus or None)
    total = len(examples) * len(modes)
    try:
        # The session already holds --monolithic-expert; eval.run falls back to it.
        if e.stderr_isatty:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            bars = Progress(TextColumn("[bold]eval"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
                            TimeElapsedColumn(), TimeRemainingColumn(), console=e.err_console())
            task = bars.add_task("", total=total)

            def step(ex_id: str, m: str, row: dict | None) -> None:
                mark = "skipped (done)" if row is None else ("✓" if row["scores"]["correct"] else "✗")
                bars.update(task, advance=1, description=f"{ex_id} {m} {mark}")
        else:
            bars, step = contextlib.nullcontext(), None
        with bars:
            result = ev.run(session, examples, modes, out=out, on_step=step, shared_plan=not own_plans)
    finally:
        session.close()
    result["dataset"] = str(path)
    result["questions"] = len(examples)
    if as_json:
        print(json.dumps(result, indent=2), file=e.stdout)
        return
    from rich.table import Table

    table = Table(title=f"{path.name}: {len(examples)} questions", box=None)
    for col in ("mode", "correct", "EM", "F1", "yes/no", "mean s", "median s", "tokens", "nodes", "model weights", "not ok"):
        table.add_column(col, justify="right" if col != "mode" else "left")
    for m, s in result["modes"].items():
        label = m if m != "monolithic" else f"monolithic ({result['monolithic_expert']})"
        table.add_row(label, f"{s['correct']:.2f}", f"{s['em']:.2f}", f"{s['f1']:.2f}",
                      f"{s['yesno_accuracy']:.2f}" if s["yesno_accuracy"] is not None else "-",
                      f"{s['mean_wall_s']:.1f}", f"{s['median_wall_s']:.1f}", f"{s['mean_tokens']:.0f}",
                      f"{s['mean_nodes']:.1f}", format_size(s["model_bytes"]), str(s["not_ok"]))
    e.out_console().print(table)
