"""`complm eval`: accuracy and latency of parallel, sequential and monolithic runs.

A question's plan is made once and shared by the parallel and sequential
runs, so those two differ only in scheduling. Each (question, mode) result is
appended to the --out file as soon as it exists, so a long run that is
interrupted resumes where it stopped.
"""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path
from typing import Callable

from complm_cli.cache.catalog import Expert
from complm_cli.evaluate.datasets import Example
from complm_cli.evaluate.metrics import score, summarize
from complm_cli.compose.session import MODES, Session


def sample_path() -> Path:
    from importlib import resources

    return Path(str(resources.files("complm_cli").joinpath("data/sample.jsonl")))


def parse_modes(text: str) -> tuple[str, ...]:
    from complm_cli.errors import UsageError

    modes = tuple(dict.fromkeys(m.strip() for m in text.split(",") if m.strip()))
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise UsageError(f"Unknown mode '{bad[0] if bad else text}'; use a comma-separated subset of {','.join(MODES)}.")
    return modes


def default_monolithic(session: Session) -> Expert:
    """The largest pulled general model: the fallback's peers, by file size."""
    general = [e for e in session.catalog.llms() if ("fallback" in e.roles or "planner" in e.roles) and session.store.is_pulled(e)]
    return max(general, key=lambda e: e.size or 0, default=session.fallback)


def read_done(out: Path | None) -> list[dict]:
    if out is None or not out.is_file():
        return []
    rows = []
    with out.open("rb") as f:
        for line in f:
            if not line.endswith(b"\n"):
                break  # cut by a kill before its newline: _append drops it, and its row is redone
            try:
                row = json.loads(line)
            except (ValueError, RecursionError):
                continue  # a damaged line is simply redone
            if isinstance(row, dict):
                rows.append(row)
    return rows


def _append(out: Path, row: dict) -> None:
    with out.open("a+b") as f:
        _drop_cut_line(f)
        f.write((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8"))
        f.flush()
        os.fsync(f.fileno())


def _drop_cut_line(f) -> None:
    """Truncate to the end of the last whole line, so a new row never joins a line a kill cut short."""
    end = f.seek(0, os.SEEK_END)
    keep = end
    while keep > 0:
        start = max(0, keep - 65536)
        f.seek(start)
        block = f.read(keep - start)
        if keep == end and block.endswith(b"\n"):
            return
        newline = block.rfind(b"\n")
        if newline >= 0:
            keep = start + newline + 1
            break
        keep = start
    f.truncate(keep)


def run(session: Session, examples: list[Example], modes: tuple[str, ...], *, out: Path | None = None,
        monolithic: Expert | None = None, on_step: Callable[[str, str, dict | None], None] | None = None,
        shared_plan: bool = True) -> dict:
    """Run every example in every mode; return the summary (over this run and a resumed --out).

    `shared_plan`: parallel and sequential run one plan, made once, so that they differ only in
    execution. Without it each mode plans for itself as `complm ask` does (parallel then starts
    steps while the planner writes), which is what a user gets."""
    on_step = on_step or (lambda *_: None)
    previous = read_done(out)
    done = {(r.get("id"), r.get("mode")) for r in previous}
    wanted_ids = {ex.id for ex in examples}
    rows = [r for r in previous if r.get("id") in wanted_ids and r.get("mode") in modes]
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
    mono = session.forced or monolithic or session.monolithic or default_monolithic(session)
    if "monolithic" in modes:
        session.monolithic = mono
    for ex in examples:
        todo = [m for m in modes if (ex.id, m) not in done]
        for m in modes:
            if m not in todo:
                on_step(ex.id, m, None)
        plan = routes = None
        for mode in todo:
            if mode != "monolithic" and plan is None and shared_plan:
                plan, routes = session.plan_and_route(ex.question)
            given = mode != "monolithic" and shared_plan
            result = session.ask(ex.question, mode=mode, plan=plan if given else None, routes=routes if given else None)
            scores = score(result.answer, ex.answers, ex.question)
            row = {
                "id": ex.id, "mode": mode, "question": ex.question, "prediction": result.answer, "gold": ex.answers,
                "scores": scores, "status": result.status, "shared_plan": given if mode != "monolithic" else None,
                "plan": result.plan.to_dict() if result.plan and mode != "monolithic" else None,
                "routes": {str(k): v.to_dict() for k, v in result.routes.items()} if mode != "monolithic" else None,
                "timings": {k: round(v, 3) for k, v in result.timings.items()}, "tokens": result.tokens,
                "nodes": len(result.nodes), "width": result.plan.width if result.plan else 1,
                "experts": result.experts,
                "model_bytes": _model_bytes(session, result.experts, mode),
            }
            if out is not None:
                _append(out, row)
            rows.append(row)
            on_step(ex.id, mode, row)
    return summary(rows, modes, mono.name)


def _model_bytes(session: Session, names: list[str], mode: str) -> int:
    """Weights a mode keeps resident: its models' files (and the embedder, for composed modes)."""
    total = sum((session.catalog.get(n).size or 0) for n in names)
    if mode != "monolithic":
        total += session.catalog.embedder.size or 0
    return total


def summary(rows: list[dict], modes: tuple[str, ...], monolithic_name: str) -> dict:
    out = {"monolithic_expert": monolithic_name, "modes": {}}
    for mode in modes:
        mine = [r for r in rows if r["mode"] == mode]
        walls = [r["timings"]["wall_s"] for r in mine]
        scored = summarize(r["scores"] for r in mine)
        yesno = [r["scores"]["correct"] for r in mine if r["scores"].get("kind") == "yesno"]
        choice = [r["scores"]["correct"] for r in mine if r["scores"].get("kind") == "choice"]
        out["modes"][mode] = {
            **scored,
            "yesno_accuracy": sum(yesno) / len(yesno) if yesno else None,
            "choice_accuracy": sum(choice) / len(choice) if choice else None,
            "mean_wall_s": statistics.fmean(walls) if walls else 0.0,
            "median_wall_s": statistics.median(walls) if walls else 0.0,
            "mean_tokens": statistics.fmean(r["tokens"]["total"] for r in mine) if mine else 0.0,
            "mean_nodes": statistics.fmean(r["nodes"] for r in mine) if mine else 0.0,
            "model_bytes": max((r.get("model_bytes", 0) for r in mine), default=0),
            "not_ok": sum(1 for r in mine if r.get("status") != "ok"),
        }
    return out
