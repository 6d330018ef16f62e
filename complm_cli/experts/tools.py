"""Tool experts: answer a plan step by computing, not by generating.

A tool claims the steps it can do (`claims` returns what it will compute, or
None) and does them exactly (`run`). The router asks every tool of the
catalog before any model: a step a tool claims goes to it, whatever the
embeddings say. The calculator is the built-in one; a package of the user's
adds more through the `register_tools` plugin hook (plugins.py).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass

from complm_cli.errors import ComplmError, ExitCode


class ToolError(ComplmError):
    """A step the tool cannot do; it fails its node with this reason."""

    code = ExitCode.MODEL


@dataclass(frozen=True)
class ToolResult:
    result: str  # the answer, as text
    expression: str = ""  # what was computed, with the parents' values in place (shown as "expression = result")
    formula: str = ""  # what the tool was given, as planned


class Tool(ABC):
    name: str = ""
    description: str = ""

    @abstractmethod
    def claims(self, step: str) -> str | None:
        """What this tool would compute for a plan step (`{N}` names step N's answer), or None if not its kind of step."""

    @abstractmethod
    def run(self, step: str, parents: dict[int, tuple[str, str]]) -> ToolResult:
        """Do the step; `parents` maps N to (its sub-question, its answer). Raise ToolError when it cannot."""

    @staticmethod
    def fill(step: str, parents: dict[int, tuple[str, str]]) -> str:
        """The step with each `{N}` replaced by step N's answer, whole."""
        return re.sub(r"\{(\d+)\}", lambda m: parents[int(m.group(1))][1] if int(m.group(1)) in parents else m.group(0), step)


class Calculator(Tool):
    name = "calculator"
    description = "Exact arithmetic over numbers, dates and earlier answers."

    def claims(self, step: str) -> str | None:
        from complm_cli.experts.calculator import to_formula

        return to_formula(step)

    def run(self, step: str, parents: dict[int, tuple[str, str]]) -> ToolResult:
        from complm_cli.experts.calculator import calculate

        calc = calculate(step, parents)
        return ToolResult(calc.result, calc.expression, calc.formula)
