"""Plugins: packages that add expert kinds to complm, found through entry points (as simonw/llm does).

A plugin is a module with functions marked `@hookimpl`, named in its
package's metadata under the entry-point group "complm":

    # pyproject.toml of the plugin's package
    [project.entry-points.complm]
    units = "complm_units"

It is loaded the first time complm needs the list of tools (reading the
catalog, routing a step); a plugin that fails to import is reported in one
sentence, not a traceback. `COMPLM_NO_PLUGINS=1` loads none (a plugin that
breaks complm can be switched off without uninstalling it).
"""

from __future__ import annotations

import os
import threading

import pluggy

from complm_cli.errors import CatalogError
from complm_cli.experts.tools import Calculator, Tool

GROUP = "complm"
hookspec = pluggy.HookspecMarker(GROUP)
hookimpl = pluggy.HookimplMarker(GROUP)


class Specs:
    @hookspec
    def register_tools(self, register):
        """Call `register(tool)` with an instance of experts.tools.Tool for each tool the plugin adds."""


class _Builtins:
    @hookimpl
    def register_tools(self, register):
        register(Calculator())


_lock = threading.Lock()
_manager: pluggy.PluginManager | None = None
_tools: dict[str, Tool] | None = None


def manager() -> pluggy.PluginManager:
    global _manager
    with _lock:
        if _manager is None:
            pm = pluggy.PluginManager(GROUP)
            pm.add_hookspecs(Specs)
            pm.register(_Builtins(), name="builtins")
            if os.environ.get("COMPLM_NO_PLUGINS", "").strip().lower() not in ("1", "true", "yes"):
                try:
                    pm.load_setuptools_entrypoints(GROUP)
                except Exception as exc:  # a plugin's import error, or one that is not a module of hooks
                    raise CatalogError(f"A complm plugin could not be loaded ({type(exc).__name__}: {exc}); "
                                      f"uninstall it, or set COMPLM_NO_PLUGINS=1 to run without plugins.") from None
            _manager = pm
        return _manager


def tools() -> dict[str, Tool]:
    """Every registered tool by name (the catalog decides which of them a run may use, and in which order)."""
    global _tools
    if _tools is None:
        found: dict[str, Tool] = {}

        def register(tool: Tool) -> None:
            if not isinstance(tool, Tool) or not tool.name:
                raise CatalogError(f"A complm plugin registered {tool!r}, which is not a named Tool.")
            if tool.name in found:
                raise CatalogError(f"Two complm plugins register a tool named '{tool.name}'; uninstall one of them.")
            found[tool.name] = tool

        manager().hook.register_tools(register=register)
        _tools = found
    return _tools


def reset() -> None:
    """Forget what was loaded (tests that install a plugin, then look again)."""
    global _manager, _tools
    with _lock:
        _manager, _tools = None, None
