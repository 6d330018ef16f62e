"""Which models a run needs, and pulling those the cache lacks before it starts."""

from __future__ import annotations

from complm_cli.cache.catalog import Catalog, Expert
from complm_cli.cache.progress import PullReporter
from complm_cli.cache.store import Installed, Store


def models_needed(catalog: Catalog, expert: str | None = None, mode: str = "parallel",
                  monolithic: str | None = None) -> list[Expert]:
    """Every model a run may use, the embedder included (what `ask` pulls on first use)."""
    corpora = [e for e in catalog.experts.values() if e.kind == "corpus"]
    if mode == "monolithic":  # with corpora, the question's passages are found by the embedder
        model = catalog.get(expert or monolithic) if (expert or monolithic) else catalog.for_role("fallback")
        return [model, catalog.embedder] if corpora else [model]
    if mode == "plan":  # `complm graph`: plan and route, run nothing
        return [catalog.for_role("planner"), catalog.embedder]
    models = [catalog.for_role(r) for r in ("planner", "aggregator", "fallback")]
    models += catalog.routable() if not expert else [catalog.get(expert)]
    models += [catalog.get(e.reader) if e.reader else catalog.for_role("fallback") for e in corpora]
    models.append(catalog.embedder)
    return list({m.name: m for m in models}.values())


def pull_missing(store: Store, models: list[Expert], reporter: PullReporter | None = None) -> list[Installed]:
    """Pull those of `models` that are not in the cache yet; return what was pulled.

    The one place a run fetches what it lacks: `Session(pull=True)`, hence `ask()`,
    `plan_and_route()` and the CLI's `ask`, `graph`, `eval` and `serve` (which pass a
    reporter that draws bars). Only local model files count: a remote expert or a
    tool has nothing to pull. Offline, nothing is pulled and nothing is asked of the
    network; the run then stops at the first model that is not there (exit 4).
    """
    if store.settings.offline:
        return []
    missing = [m for m in {m.name: m for m in models}.values() if m.pullable and not store.is_pulled(m)]
    if not missing:
        return []
    reporter = reporter or PullReporter()
    reporter.missing(missing)
    pulled = []
    for model in missing:
        progress = reporter.progress(model)
        try:
            installed = store.pull(model, progress=progress)
        finally:
            progress.close()
        reporter.pulled(installed)
        pulled.append(installed)
    return pulled


