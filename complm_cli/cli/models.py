"""`complm list`, `complm rm` and `complm verify`: what the catalog holds and what is cached."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from complm_cli.cli.common import CatalogOpt, JsonOpt, env, fail, handles_errors, load
from complm_cli.errors import ExitCode


@handles_errors
def list_models(as_json: bool = JsonOpt, catalog: Path = CatalogOpt) -> None:
    """List the catalog's experts: roles, domains, size, pulled or not, path."""
    from complm_cli.cache.config import format_size
    from complm_cli.cache.store import Store

    settings, cat = load(catalog)
    store = Store(settings)
    rows = []
    for expert in cat.experts.values():
        found = store.installed(expert) if expert.pullable else None
        rows.append({
            "name": expert.name,
            "kind": expert.kind,
            "default": expert.default or expert.name == cat.embedder_name,
            "roles": list(expert.roles),
            "domains": list(expert.domains),
            "description": expert.description,
            "size": found.size if found else expert.size,
            "sha256": expert.sha256 or (found.sha256 if found else None),
            "pulled": bool(found) if expert.pullable else None,
            "path": str(store.path(expert)) if found else None,
            "source": found.source if found else None,
            "catalog": expert.origin,
            "remote": _remote_row(expert),
            **(_corpus_row(expert, settings, cat) if expert.kind == "corpus" else {}),
        })
    e = env()
    if as_json:
        print(json.dumps(rows, indent=2), file=e.stdout)
        return
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for col in ("name", "roles", "domains", "size", "pulled", "path"):
        table.add_column(col, overflow="fold")
    for r in rows:
        roles = {"llm": ", ".join(r["roles"]), "tool": "tool (" + ", ".join(r["roles"]) + ")"}.get(r["kind"], r["kind"])
        name = r["name"] + (" *" if r["default"] else "")
        if r["remote"]:
            where = f"{r['remote']['api_base']} ({r['remote']['model_name']})"
            table.add_row(name, roles, ", ".join(r["domains"][:3]), "-", "remote", where)
            continue
        if r["kind"] == "corpus":
            table.add_row(name, f"corpus (reader {r['reader']})", "", "-", "indexed" if r["indexed"] else "not indexed",
                          f"corpus {r['corpus']}")
            continue
        pulled = "built-in" if r["pulled"] is None else ("[green]yes[/]" if r["pulled"] else "no")
        table.add_row(name, roles, ", ".join(r["domains"][:3]), format_size(r["size"]) if r["size"] else "-" if r["pulled"] is None else "?",
                      pulled, r["path"] or "")
    console = e.out_console()
    console.print(table)
    console.print("* default set: pulled by a bare `complm pull` and used by `complm ask`.")


def _remote_row(expert) -> dict | None:
    """Where a remote expert runs; the name of its key's variable, never the key."""
    spec = expert.remote
    if spec is None:
        return None
    return {"api_base": spec.api_base, "model_name": spec.model_name, "api_key_name": spec.api_key_name,
            "max_parallel": spec.max_parallel, "timeout": spec.timeout}


def _skip_unpullable(experts: list, action: str, e, say: bool = True) -> list:
    """Tools and remote experts have nothing in the cache; say so for those a user named."""
    for x in experts:
        if not x.pullable and say:
            where = f"runs on {x.remote.api_base}" if x.remote is not None else f"is a built-in {x.kind}"
            print(f"{x.name} {where}; nothing to {action}", file=e.stderr)
    return [x for x in experts if x.pullable]


@handles_errors
def rm(
    names: list[str] = typer.Argument(None, help="Experts to remove from the cache."),
    all_: bool = typer.Option(False, "--all", help="Remove every cached model."),
    catalog: Path = CatalogOpt,
) -> None:
    """Remove pulled models from the cache."""
    from complm_cli.cache.store import Store

    settings, cat = load(catalog)
    if not names and not all_:
        raise fail("name the experts to remove, or pass --all.", ExitCode.USAGE)
    store = Store(settings)
    experts = list(cat.experts.values()) if all_ else [cat.get(n) for n in names]
    e = env()
    for expert in _skip_unpullable(experts, "remove", e, say=not all_):
        if store.remove(expert):
            print(f"removed {expert.name}", file=e.stderr)
        elif not all_:
            print(f"{expert.name} was not pulled", file=e.stderr)


@handles_errors
def verify(
    names: list[str] = typer.Argument(None, help="Experts to check (default: every pulled one)."),
    as_json: bool = JsonOpt,
    catalog: Path = CatalogOpt,
) -> None:
    """Re-hash pulled files and check the corpora; report any that changed or broke (exit 7 if any did)."""
    from complm_cli.cache.store import Store

    settings, cat = load(catalog)
    store = Store(settings)
    e = env()
    if names:
        experts = _skip_unpullable([cat.get(n) for n in names], "verify", e)
    else:
        experts = [x for x in cat.experts.values() if x.pullable and (store.folder(x) / "complm.json").exists()]
    missing = [x.name for x in experts if not (store.folder(x) / "complm.json").exists()]
    if missing:
        raise fail(f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not pulled; run `complm pull {' '.join(missing)}` first.", ExitCode.NOT_FOUND)
    results = [store.verify(x) for x in experts]
    if not names:  # everything complm keeps: the corpora too
        from complm_cli.cache.store import VerifyResult
        from complm_cli.corpus.index import info, names as corpus_names, verify as verify_corpus

        for name in corpus_names(settings.cache_dir):
            if info(settings.cache_dir, name) is not None:
                results.append(VerifyResult(f"corpus {name}", *verify_corpus(settings.cache_dir, name)))
    if as_json:
        print(json.dumps([r.__dict__ for r in results], indent=2), file=e.stdout)
    else:
        for r in results:
            print(f"{r.name}: {r.message}", file=e.stdout)
        if not results and not names:
            print("nothing is pulled", file=e.stdout)
    bad = [r for r in results if not r.ok]
    if bad:
        raise fail(f"{len(bad)} model(s) or corpora failed verification: {', '.join(r.name for r in bad)}.", ExitCode.INTEGRITY)


def _corpus_row(expert, settings, cat) -> dict:
    from complm_cli.corpus.index import info

    return {"corpus": expert.corpus, "reader": expert.reader or cat.for_role("fallback").name, "indexed": info(settings.cache_dir, expert.corpus) is not None}
