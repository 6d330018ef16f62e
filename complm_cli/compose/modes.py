"""The modes a question runs in; apart from session.py, so that a client of a server checks them without
importing the pipeline."""

from __future__ import annotations

from complm_cli.errors import UsageError

MODES = ("parallel", "sequential", "monolithic")  # what `ask` runs; models_needed also knows "plan"


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise UsageError(f"Unknown mode '{mode}'; use one of {', '.join(MODES)}.")
    return mode
