"""The record of one run: what `--json` prints, what the server sends, what `eval` scores."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from complm_cli.compose.dag import Plan
from complm_cli.compose.records import NodeResult
from complm_cli.compose.route import Route


@dataclass
class Result:
    question: str
    mode: str
    answer: str
    status: str  # ok | partial | failed
    plan: Plan | None
    routes: dict[int, Route]
    nodes: list[NodeResult]
    timings: dict[str, float]
    tokens: dict[str, int]
    aggregated: bool
    experts: list[str] = field(default_factory=list)  # models used
    restored: list[int] = field(default_factory=list)  # final nodes the aggregator left out, put back
    memory: int = 0  # peak resident model bytes (estimated)
    streamed: dict | None = None  # steps run while the planner wrote: released, kept, discarded (None: not streamed)
    reason: str | None = None  # why the status is not ok, in words (the CLI's stderr line, --json's "reason")

    @property
    def sources(self) -> list:
        """Every passage the answer rests on (corpus.search.Hit), once each, in the order of the steps."""
        seen: dict[tuple[str, int], Any] = {}
        for n in self.nodes:
            for h in n.sources:
                seen.setdefault((h.corpus, h.id), h)
        return list(seen.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "question": self.question,
            "mode": self.mode,
            "answer": self.answer,
            "status": self.status,
            "reason": self.reason,
            "aggregated": self.aggregated,
            "restored_parts": self.restored,
            "plan_fallback": self.plan.fallback if self.plan else None,
            "plan_repairs": self.plan.repairs if self.plan else [],
            "plan_votes": self.plan.votes if self.plan else None,
            "plan_stream": self.streamed,
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
            "tokens": self.tokens,
            "experts": self.experts,
            "memory_bytes": self.memory,
            "sources": [h.to_source() for h in self.sources],
            "nodes": [
                {
                    "id": n.id,
                    "question": n.question,
                    "depends_on": list(n.depends_on),
                    "expert": n.expert,
                    "score": round(self.routes[n.id].score, 4) if n.id in self.routes else None,
                    "route": self.routes[n.id].reason if n.id in self.routes else None,
                    "calculation": n.calculation,
                    "sources": [h.to_source() for h in n.sources],
                    "not_found": n.not_found,
                    "answer": n.answer,
                    "status": n.status,
                    "cut": n.cut,
                    "reason": n.reason,
                    "started_s": round(n.started, 3) if n.started is not None else None,
                    "seconds": round(n.seconds, 3),
                    "tokens": n.tokens,
                    "tokens_per_s": round(n.tokens_per_second, 2),
                }
                for n in self.nodes
            ],
        }


def judge(answer: str, nodes: list[NodeResult], cut: bool = False) -> tuple[str, str | None]:
    """(status, reason): ok only when every step finished and no answer stopped at its token limit.

    `cut`: the final answer itself (the aggregator's, or the direct one) stopped at its limit."""
    problems = [f"step {n.id} did not finish ({n.reason})" for n in nodes if n.status != "done"]
    problems += [f"step {n.id}'s answer stopped at its token limit" for n in nodes if n.status == "done" and n.cut]
    problems += [f"{'the corpus' if len(nodes) == 1 else f'step {n.id}: the corpus'} does not say ({n.question})"
                 for n in nodes if n.not_found]
    if cut:
        problems.append("the answer stopped at its token limit")
    if not answer:
        return "failed", "; ".join(problems) or "the model returned an empty answer"
    return ("partial", "; ".join(problems)) if problems else ("ok", None)
