"""The records of a run's execution: each node's result, the run's options, the execution as a whole."""

from __future__ import annotations

from dataclasses import dataclass, field

from complm_cli.corpus.search import Hit

CONTEXT_CHARS = 600  # of each parent's answer shown to a child, so one long answer cannot crowd the prompt


@dataclass
class NodeResult:
    id: int
    question: str  # after substitution
    depends_on: tuple[int, ...]
    expert: str
    status: str = "pending"  # done | failed | skipped | cancelled
    answer: str | None = None
    reason: str | None = None
    started: float | None = None  # seconds since the run began
    seconds: float = 0.0
    tokens: int = 0
    threads: int = 0
    calculation: dict | None = None  # for a calculator node: formula, expression and result
    cut: bool = False  # done, but the answer stopped at its token limit (`reason` says so)
    sources: list[Hit] = field(default_factory=list)  # a knowledge step's passages, if it found its answer
    not_found: bool = False  # a knowledge step whose passages did not hold its answer

    @property
    def shown(self) -> str | None:
        """The answer as a reader sees it: a calculation with its working ("8 + 4 = 12")."""
        if self.calculation and self.status == "done":
            return f"{self.calculation['expression']} = {self.calculation['result']}"
        return self.answer

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


@dataclass
class RunOptions:
    workers: int = 2
    threads: int = 2
    node_timeout: float = 180.0
    seed: int = 0
    max_tokens: int | None = None  # None: each expert's own cap
    temperature: float | None = None
    context_chars: int = CONTEXT_CHARS
    knowledge: object = None  # compose.knowledge.Knowledge: the corpora knowledge steps look facts up in


@dataclass
class Execution:
    results: dict[int, NodeResult]
    seconds: float
    max_concurrency: int = 0
    events: list[tuple[float, str, int]] = field(default_factory=list)  # (time, 'start'|'end', node)
    t0: float = 0.0  # time.perf_counter() when the run began: `started` counts from here
    discarded: list[NodeResult] = field(default_factory=list)  # retracted nodes (streamed steps the final plan dropped)
