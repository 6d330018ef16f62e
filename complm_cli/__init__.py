"""complm: answer hard questions by composing small local expert models.

`from complm_cli import ask` gives the whole pipeline as a library call. The
heavy parts load on first use so that importing the package stays cheap.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["ask", "plan_and_route", "__version__"]


def __getattr__(name: str):
    if name in ("ask", "plan_and_route"):
        from complm_cli.compose import session

        return getattr(session, name)
    raise AttributeError(name)
