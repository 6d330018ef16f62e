"""The expert catalog: models.toml shipped with complm, a user catalog, and --catalog.

Later files add entries or override keys of earlier ones. Everything a catalog
says is validated here, so the rest of complm can trust an Expert: a bad
catalog fails with the file, the entry and the key at fault.
"""

from __future__ import annotations

import math
import re
import string
import tomllib
import urllib.parse
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Any

from complm_cli.errors import CatalogError, NotFoundError

ROLES = ("planner", "aggregator", "fallback", "expert")
MANIFEST = "complm.json"  # beside the model in its cache folder, so no model file may take its name
# Names start with a letter or digit: a leading '-' would make a name that
# reaches pip (a wheel requirement) or a command line an option.
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_REQUIREMENT_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?==[A-Za-z0-9][A-Za-z0-9.!+_-]*$")
_REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
MAX_PARTS = 1000
GENERATION_KEYS = ("n_ctx", "max_tokens", "temperature", "gpu_layers")
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


@dataclass(frozen=True)
class HubSource:
    repo: str
    file: str = ""  # one file (a GGUF expert)
    files: tuple[str, ...] = ()  # several files of a folder (the embedder)
    revision: str = "main"
    kind: str = "hub"

    def describe(self) -> str:
        return f"Hub {self.repo}@{self.revision[:12]}"


@dataclass(frozen=True)
class PypiSource:
    wheels: tuple[str, ...]  # requirement strings, NAME==VERSION, downloaded in order
    members: tuple[str, ...] = ()  # members concatenated, in order, into the one file
    prefix: str = ""  # or: a folder inside the (single) wheel that is the model folder
    kind: str = "pypi"

    def describe(self) -> str:
        first = self.wheels[0]
        more = f" (+{len(self.wheels) - 1} parts)" if len(self.wheels) > 1 else ""
        return f"PyPI mirror {first}{more}"


@dataclass(frozen=True)
class UrlSource:
    url: str
    kind: str = "url"

    def describe(self) -> str:
        return f"URL {self.url}"


@dataclass(frozen=True)
class PathSource:
    path: str
    kind: str = "path"

    def describe(self) -> str:
        return f"local file {self.path}"


Source = HubSource | PypiSource | UrlSource | PathSource


@dataclass(frozen=True)
class Generation:
    n_ctx: int = 4096
    max_tokens: int = 256
    temperature: float = 0.2
    gpu_layers: int | None = None  # None: the --gpu-layers setting


@dataclass(frozen=True)
class RemoteSpec:
    """An OpenAI-compatible endpoint that serves an expert (keys named as in simonw/llm)."""

    api_base: str  # e.g. http://host:8080/v1, without a trailing slash
    model_name: str
    api_key_name: str | None = None  # the environment variable that holds the key; never the key itself
    max_parallel: int = 1  # requests at once; 1 suits a server without parallel slots
    timeout: float = 60.0  # seconds for one request

    @property
    def endpoint(self) -> tuple[str, str]:
        """What shares one capacity limit: two experts on the same server and model count together."""
        return (self.api_base, self.model_name)


@dataclass(frozen=True)
class Expert:
    """A catalog entry: a GGUF chat model (kind 'llm'), a built-in tool (kind 'tool'), a knowledge corpus
    (kind 'corpus', answered by its reader model) or the sentence embedder."""

    name: str
    description: str
    file: str  # GGUF file name, or the folder name of an embedder
    sources: tuple[Source, ...]
    kind: str = "llm"
    roles: tuple[str, ...] = ()
    domains: tuple[str, ...] = ()
    examples: tuple[str, ...] = ()
    size: int | None = None  # bytes of the file (for an embedder: of check_file)
    sha256: str | None = None  # None: trust the SHA-256 the Hub reports for the file
    check_file: str = ""  # for an embedder: the file inside the folder that size/sha256 describe
    generation: Generation = field(default_factory=Generation)
    default: bool = False
    note: str = ""
    origin: str = ""  # catalog file the entry (or its last override) came from
    tool: str = ""  # for kind 'tool': which built-in tool answers (the calculator)
    # How far this expert's routing score must be above the fallback's for it to take a node:
    # a smaller model that answers its own topic worse than the fallback gets a margin (bench/competence.py).
    route_margin: float = 0.0
    remote: RemoteSpec | None = None  # served by an OpenAI-compatible endpoint instead of a local file
    corpus: str = ""  # for kind 'corpus': the corpus its steps are looked up in
    reader: str = ""  # for kind 'corpus': the model that answers from the passages ("": the fallback)
    threshold: float | None = None  # for kind 'corpus': its routing threshold (None: compose/knowledge.py's)

    @property
    def pullable(self) -> bool:
        """Has files to pull into the cache (a tool, a corpus or a remote expert has none)."""
        return self.kind not in ("tool", "corpus") and self.remote is None

    @property
    def profile_texts(self) -> tuple[str, ...]:
        """What the router embeds for this expert: first a line about its domains, then its examples.

        The domains make a better first line than the description, which names the
        model and its size: words no question is about."""
        head = f"Questions about {', '.join(self.domains)}." if self.domains else self.description
        return (head, *self.examples)


@dataclass
class Catalog:
    experts: dict[str, Expert]
    embedder_name: str
    default_names: tuple[str, ...]
    route_threshold: float
    files: tuple[Path, ...]
    role_names: dict[str, str]  # role -> expert name, where the catalog pins one

    @property
    def embedder(self) -> Expert:
        return self.experts[self.embedder_name]

    def get(self, name: str) -> Expert:
        try:
            return self.experts[name]
        except KeyError:
            names = ", ".join(n for n, e in self.experts.items() if e.kind != "embedder")
            raise NotFoundError(f"No expert named '{name}' in the catalog; known experts: {names}.") from None

    def tools(self) -> list[Expert]:
        return [e for e in self.experts.values() if e.kind == "tool"]

    def llms(self) -> list[Expert]:
        return [e for e in self.experts.values() if e.kind == "llm"]

    def defaults(self) -> list[Expert]:
        return [self.experts[n] for n in self.default_names]

    def for_role(self, role: str, among: list[Expert] | None = None) -> Expert:
        """The expert that plays `role`: the catalog's pinned one, else the first default with it."""
        pinned = self.role_names.get(role)
        if pinned and (among is None or any(e.name == pinned for e in among)):
            return self.get(pinned)
        pool = among if among is not None else self.defaults() + self.llms()
        for expert in pool:
            if role in expert.roles:
                return expert
        raise CatalogError(f"No expert in the catalog has the role '{role}'; give one `roles = [\"{role}\", ...]`.")

    def routable(self, among: list[Expert] | None = None) -> list[Expert]:
        pool = among if among is not None else self.defaults()
        return [e for e in pool if "expert" in e.roles or "fallback" in e.roles]


def shipped_catalog_text() -> tuple[str, str]:
    """The models.toml that ships with complm (inside the wheel, or at the top of a checkout)."""
    packaged = resources.files("complm_cli").joinpath("models.toml")
    if packaged.is_file():
        return packaged.read_text(encoding="utf-8"), str(packaged)
    checkout = Path(__file__).resolve().parents[2] / "models.toml"
    return checkout.read_text(encoding="utf-8"), str(checkout)


def safe_relpath(value: str, *, allow_dirs: bool) -> bool:
    """A file name from a catalog must stay inside the cache folder."""
    if not value or "\\" in value or "\x00" in value or value.startswith("/"):
        return False
    parts = PurePosixPath(value).parts
    if not allow_dirs and len(parts) != 1:
        return False
    return all(p not in (".", "..") and not p.startswith(".") and p.strip() == p for p in parts)


class _Checker:
    """Reads one entry's keys with type checks that name the file, entry and key."""

    def __init__(self, table: dict[str, Any], where: str, origins: dict[str, str]):
        self.table, self.where, self.origins = table, where, origins

    def fail(self, key: str, problem: str) -> CatalogError:
        origin = self.origins.get(key.split(".")[0], self.origins.get("", "?"))
        return CatalogError(f"Catalog {origin}, entry {self.where}, key '{key}': {problem}.")

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = ..., table: dict | None = None, label: str | None = None) -> Any:
        table = self.table if table is None else table
        label = label or key
        if key not in table:
            if default is ...:
                raise self.fail(label, "is missing")
            return default
        value = table[key]
        if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
            raise self.fail(label, f"must be {_kind_name(kind)}, not {value!r}")
        if not isinstance(value, kind):
            raise self.fail(label, f"must be {_kind_name(kind)}, not {value!r}")
        return value

    def strings(self, key: str, default: Any = ..., table: dict | None = None, label: str | None = None) -> tuple[str, ...]:
        value = self.get(key, list, default, table, label)
        if not all(isinstance(v, str) and v.strip() for v in value):
            raise self.fail(label or key, "must be a list of non-empty strings")
        return tuple(value)


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false", list: "a list", dict: "a table"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _expand(template: str, parts: int, c: "_Checker", label: str) -> tuple[str, ...]:
    # `wheels = "name-part{n}==1.0"` with `parts = 22` spells 22 wheels in one line.
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
        unknown = [f for f in fields if f not in ("n", "m")]
        if unknown:
            raise c.fail(label, f"has the placeholder {{{unknown[0]}}}; only {{n}} (1 to parts) and {{m}} (0 to parts-1) are known")
        return tuple(template.format(n=n, m=n - 1) for n in range(1, parts + 1))
    except (ValueError, IndexError, KeyError) as exc:
        raise c.fail(label, f"is not a valid template ({exc})") from None


def _parse_source(raw: Any, index: int, c: _Checker, kind: str) -> Source:
    label = f"sources[{index}]"
    if not isinstance(raw, dict):
        raise c.fail(label, "must be a table")
    stype = c.get("type", str, table=raw, label=f"{label}.type")
    allowed = {"hub": {"repo", "revision", "file", "files"}, "pypi": {"wheels", "members", "prefix", "parts"},
               "url": {"url"}, "path": {"path"}}.get(stype, set()) | {"type"}
    unknown = sorted(set(raw) - allowed) if stype in ("hub", "pypi", "url", "path") else []
    if unknown:
        raise c.fail(f"{label}.{unknown[0]}", f"is not a key of a {stype} source")
    if stype == "hub":
        repo = c.get("repo", str, table=raw, label=f"{label}.repo")
        if not _REPO_RE.match(repo):
            raise c.fail(f"{label}.repo", f"'{repo}' is not a Hub repository id like owner/name")
        revision = c.get("revision", str, "main", table=raw, label=f"{label}.revision")
        if not revision.strip() or revision.startswith("-"):
            raise c.fail(f"{label}.revision", "must be a branch, tag or commit id")
        if kind == "embedder":
            files = c.strings("files", table=raw, label=f"{label}.files")
            if not all(safe_relpath(f, allow_dirs=True) for f in files):
                raise c.fail(f"{label}.files", "names a path outside the model folder")
            return HubSource(repo=repo, files=files, revision=revision)
        file = c.get("file", str, table=raw, label=f"{label}.file")
        if not safe_relpath(file, allow_dirs=True):
            raise c.fail(f"{label}.file", "must be a path inside the repository")
        return HubSource(repo=repo, file=file, revision=revision)
    if stype == "pypi":
        if "parts" in raw:
            parts = c.get("parts", int, table=raw, label=f"{label}.parts")
            if not 1 <= parts <= MAX_PARTS:
                raise c.fail(f"{label}.parts", f"must be at least 1 and at most {MAX_PARTS}, not {parts}")
            wheels = _expand(c.get("wheels", str, table=raw, label=f"{label}.wheels"), parts, c, f"{label}.wheels")
            members = _expand(c.get("members", str, table=raw, label=f"{label}.members"), parts, c, f"{label}.members") if "members" in raw else ()
        else:
            wheels = c.strings("wheels", table=raw, label=f"{label}.wheels")
            members = c.strings("members", (), table=raw, label=f"{label}.members")
        if not wheels or not all(_REQUIREMENT_RE.match(w) for w in wheels):
            raise c.fail(f"{label}.wheels", "must be pinned requirements like name==1.0 (a name starts with a letter or digit)")
        prefix = c.get("prefix", str, "", table=raw, label=f"{label}.prefix")
        if kind == "embedder" and not prefix:
            raise c.fail(f"{label}.prefix", "is missing (the model folder inside the wheel)")
        if kind == "llm" and len(members) != len(wheels):
            raise c.fail(f"{label}.members", "must name one member per wheel")
        return PypiSource(wheels=wheels, members=members, prefix=prefix)
    if stype == "url":
        url = c.get("url", str, table=raw, label=f"{label}.url")
        if not re.match(r"^(https?|file)://", url):
            raise c.fail(f"{label}.url", "must start with https://, http:// or file://")
        return UrlSource(url=url)
    if stype == "path":
        return PathSource(path=c.get("path", str, table=raw, label=f"{label}.path"))
    raise c.fail(f"{label}.type", f"'{stype}' is not one of hub, pypi, url, path")


def _parse_entry(name: str, table: dict[str, Any], kind: str, origins: dict[str, str]) -> Expert:
    where = f"[{'experts' if kind == 'llm' else 'embedders'}.\"{name}\"]"
    c = _Checker(table, where, origins)
    if not _NAME_RE.match(name) or ".." in name:
        why = " (a name that starts with '-' would read as an option)" if name.startswith("-") else ""
        raise c.fail("", f"the name must start with a letter or digit and hold only letters, digits, '.', '_' or '-' "
                         f"(no '..'){why}")
    if kind == "llm" and table.get("kind") == "corpus":
        return _parse_corpus(name, table, c, origins)
    if kind == "llm" and table.get("kind", "llm") != "llm":
        return _parse_tool(name, table, c, origins)
    description = c.get("description", str)
    remote_table = c.get("remote", dict, None)
    if remote_table is not None and kind != "llm":
        raise c.fail("remote", "the embedder runs locally; only an [experts] entry can be remote")
    remote = _parse_remote(remote_table, c) if remote_table is not None else None
    # A remote expert needs no file: its file, size, hash and sources (say, from the shipped
    # entry it overrides) are kept but never used.
    file = c.get("file", str, "" if remote else ...) if kind == "llm" else c.get("dir", str, name)
    if (file or not remote) and not safe_relpath(file, allow_dirs=False):
        raise c.fail("file" if kind == "llm" else "dir", f"'{file}' must be a plain file name that stays inside the cache")
    if file.lower() == MANIFEST:
        raise c.fail("file" if kind == "llm" else "dir", f"'{file}' is the name of complm's own manifest; rename the model file")
    roles: tuple[str, ...] = ()
    if kind == "llm":
        roles = c.strings("roles")
        bad = [r for r in roles if r not in ROLES]
        if bad:
            raise c.fail("roles", f"unknown role '{bad[0]}' (roles are {', '.join(ROLES)})")
    size = c.get("size", int, None)
    if size is not None and size <= 0:
        raise c.fail("size", "must be a positive number of bytes")
    sha = c.get("sha256", str, None)
    if sha is not None:
        sha = sha.lower()
        if not _SHA_RE.match(sha):
            raise c.fail("sha256", "must be 64 hex digits")
    check_file = ""
    if kind == "embedder":
        check_file = c.get("check_file", str)
        if not safe_relpath(check_file, allow_dirs=True):
            raise c.fail("check_file", "names a path outside the model folder")
    raw_sources = c.get("sources", list, [] if remote else ...)
    if not raw_sources and not remote:
        raise c.fail("sources", "must list at least one source")
    sources = tuple(_parse_source(raw, i, c, kind) for i, raw in enumerate(raw_sources))
    if sha is None and not remote and not any(isinstance(s, HubSource) for s in sources):
        raise c.fail("sha256", "is missing (only an entry with a Hub source may leave it to the Hub)")
    generation = _parse_generation(c.get("generation", dict, {}), where, origins)
    known = {"description", "file", "dir", "roles", "domains", "examples", "size", "sha256", "check_file",
             "sources", "generation", "default", "note", "route_margin", "remote"}
    margin = float(c.get("route_margin", (int, float), 0.0))
    if not (math.isfinite(margin) and 0 <= margin <= 1):
        raise c.fail("route_margin", f"must be a number from 0 to 1, not {margin}")
    unknown = sorted(set(table) - known)
    if unknown:
        raise c.fail(unknown[0], f"is not a known key (known: {', '.join(sorted(known))})")
    return Expert(
        name=name, description=description, file=file, sources=sources, kind=kind, roles=roles,
        domains=c.strings("domains", ()), examples=c.strings("examples", ()), size=size, sha256=sha,
        check_file=check_file, generation=generation, default=c.get("default", bool, False),
        note=c.get("note", str, ""), origin=origins.get("", ""), route_margin=margin, remote=remote,
    )


def _parse_tool(name: str, table: dict[str, Any], c: _Checker, origins: dict[str, str]) -> Expert:
    """An expert that is not a language model: nothing to pull, answers computed exactly."""
    if c.get("kind", str) != "tool":
        raise c.fail("kind", f"'{table['kind']}' is not one of llm, tool, corpus")
    from complm_cli.experts.plugins import tools  # the built-in calculator, and those of installed plugins

    tool = c.get("tool", str)
    if tool not in tools():
        raise c.fail("tool", f"'{tool}' is not a known tool (known: {', '.join(tools())}; a plugin package adds more)")
    roles = c.strings("roles", ("expert",))
    if any(r != "expert" for r in roles):
        raise c.fail("roles", "a tool can only have the role 'expert'")
    known = {"kind", "tool", "description", "roles", "domains", "examples", "note"}
    unknown = sorted(set(table) - known)
    if unknown:
        raise c.fail(unknown[0], f"is not a known key of a tool (known: {', '.join(sorted(known))})")
    return Expert(name=name, description=c.get("description", str), file="", sources=(), kind="tool", roles=roles,
                  domains=c.strings("domains", ()), examples=c.strings("examples", ()), note=c.get("note", str, ""),
                  origin=origins.get("", ""), tool=tool)


def _parse_corpus(name: str, table: dict[str, Any], c: _Checker, origins: dict[str, str]) -> Expert:
    """A knowledge expert: steps routed to it are answered from a corpus's passages by its reader model."""
    known = {"kind", "corpus", "reader", "threshold", "description", "roles", "note"}
    unknown = sorted(set(table) - known)
    if unknown:
        raise c.fail(unknown[0], f"is not a known key of a corpus expert (known: {', '.join(sorted(known))})")
    from complm_cli.corpus.index import is_name

    corpus = c.get("corpus", str, name)
    if not is_name(corpus):
        raise c.fail("corpus", f"'{corpus}' is not a corpus name")
    threshold = c.get("threshold", (int, float), None)
    if threshold is not None and not -1.0 <= threshold <= 1.0:
        raise c.fail("threshold", f"must be from -1 to 1, not {threshold}")
    roles = c.strings("roles", ("expert",))
    if any(r != "expert" for r in roles):
        raise c.fail("roles", "a corpus can only have the role 'expert'")
    return Expert(name=name, description=c.get("description", str, f"Passages of the corpus '{corpus}'."), file="",
                  sources=(), kind="corpus", roles=roles, note=c.get("note", str, ""), origin=origins.get("", ""),
                  corpus=corpus, reader=c.get("reader", str, ""),
                  threshold=float(threshold) if threshold is not None else None)


def _parse_generation(table: dict[str, Any], where: str, origins: dict[str, str]) -> Generation:
    gc = _Checker(table, where, {"": origins.get("generation", origins.get("", "?"))})
    unknown = sorted(set(table) - set(GENERATION_KEYS))
    if unknown:
        raise gc.fail(f"generation.{unknown[0]}", f"is not a key of [generation] (known: {', '.join(GENERATION_KEYS)})")
    n_ctx = gc.get("n_ctx", int, 4096, label="generation.n_ctx")
    max_tokens = gc.get("max_tokens", int, 256, label="generation.max_tokens")
    temperature = float(gc.get("temperature", (int, float), 0.2, label="generation.temperature"))
    gpu_layers = gc.get("gpu_layers", int, None, label="generation.gpu_layers")
    for key, value in (("n_ctx", n_ctx), ("max_tokens", max_tokens)):
        if value < 1:
            raise gc.fail(f"generation.{key}", f"must be a positive number of tokens, not {value}")
    if not (math.isfinite(temperature) and temperature >= 0):
        raise gc.fail("generation.temperature", f"must be 0 or more, not {temperature}")
    if gpu_layers is not None and gpu_layers < -1:
        raise gc.fail("generation.gpu_layers", f"must be -1 (all layers) or 0 or more, not {gpu_layers}")
    return Generation(n_ctx=n_ctx, max_tokens=max_tokens, temperature=temperature, gpu_layers=gpu_layers)


def _parse_remote(table: dict[str, Any], c: _Checker) -> RemoteSpec:
    known = {"api_base", "model_name", "api_key_name", "max_parallel", "timeout"}
    unknown = sorted(set(table) - known)
    if unknown:
        raise c.fail(f"remote.{unknown[0]}", f"is not a key of a remote expert (known: {', '.join(sorted(known))})")
    api_base = c.get("api_base", str, table=table, label="remote.api_base").strip().rstrip("/")
    url = urllib.parse.urlsplit(api_base)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise c.fail("remote.api_base", "must be an http:// or https:// URL such as http://127.0.0.1:8080/v1")
    if url.username is not None or url.password is not None:
        # Never echo it: the URL holds a credential.
        raise c.fail("remote.api_base", "must not hold a user name or password; put the key in the environment "
                                        "variable that api_key_name names")
    model_name = c.get("model_name", str, table=table, label="remote.model_name").strip()
    if not model_name:
        raise c.fail("remote.model_name", "must name the model the server serves")
    key_name = c.get("api_key_name", str, None, table=table, label="remote.api_key_name")
    if key_name is not None and not _ENV_NAME_RE.match(key_name):
        # Not repeated in the message either: a user may have pasted the key itself here.
        raise c.fail("remote.api_key_name", "must be the name of an environment variable that holds the key "
                                            "(letters, digits and '_'), not the key itself")
    max_parallel = c.get("max_parallel", int, 1, table=table, label="remote.max_parallel")
    if max_parallel < 1:
        raise c.fail("remote.max_parallel", "must be 1 or more")
    timeout = float(c.get("timeout", (int, float), 60.0, table=table, label="remote.timeout"))
    if not timeout > 0:
        raise c.fail("remote.timeout", "must be a number of seconds above 0")
    return RemoteSpec(api_base=api_base, model_name=model_name, api_key_name=key_name,
                      max_parallel=max_parallel, timeout=timeout)


def _read_toml(text: str, origin: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(f"Catalog {origin} is not valid TOML: {exc}.") from None


def _read_layers(extra: list[Path] | None, include_shipped: bool) -> list[tuple[dict[str, Any], str]]:
    layers: list[tuple[dict[str, Any], str]] = []
    if include_shipped:
        text, origin = shipped_catalog_text()
        layers.append((_read_toml(text, origin), origin))
    for path in extra or []:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise CatalogError(f"Catalog file {path} does not exist; check --catalog or COMPLM_CATALOG.") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise CatalogError(f"Catalog file {path} cannot be read ({exc}).") from None
        layers.append((_read_toml(text, str(path)), str(path)))
    return layers


@dataclass
class _Merged:
    """The layers as one: each entry's keys and the file each key came from (what an error names)."""

    entries: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    origins: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)
    defaults_origin: dict[str, str] = field(default_factory=dict)

    def add(self, data: dict[str, Any], origin: str) -> None:
        for top in data:
            if top not in ("experts", "embedders", "defaults"):
                raise CatalogError(f"Catalog {origin}: unknown table [{top}] (expected [experts.NAME], [embedders.NAME] or [defaults]).")
        for section, kind in (("experts", "llm"), ("embedders", "embedder")):
            entries = data.get(section, {})
            if not isinstance(entries, dict):
                raise CatalogError(f"Catalog {origin}: [{section}] must be a table of entries.")
            for name, table in entries.items():
                if not isinstance(table, dict):
                    raise CatalogError(f"Catalog {origin}, entry [{section}.\"{name}\"]: must be a table.")
                base = self.entries.setdefault((kind, name), {})
                where = self.origins.setdefault((kind, name), {})
                for k, v in table.items():
                    if k in ("generation", "remote") and isinstance(v, dict) and isinstance(base.get(k), dict):
                        v = {**base[k], **v}
                    base[k] = v
                    where[k] = origin
                where[""] = origin
        defaults = data.get("defaults", {})
        if not isinstance(defaults, dict):
            raise CatalogError(f"Catalog {origin}, [defaults]: must be a table.")
        for k, v in defaults.items():
            if k not in _DEFAULTS_KEYS:  # a typo ("aggregater") would otherwise change nothing, silently
                raise CatalogError(f"Catalog {origin}, [defaults], key '{k}': unknown; the keys are {', '.join(sorted(_DEFAULTS_KEYS))}.")
            self.defaults[k] = v
            self.defaults_origin[k] = origin

    def setting(self, key: str, kind: type | tuple[type, ...], default: Any) -> Any:
        value = self.defaults.get(key, default)
        if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
            raise CatalogError(f"Catalog {self.defaults_origin.get(key, '?')}, [defaults], key '{key}': must be {_kind_name(kind)}.")
        return value


def load_catalog(extra: list[Path] | None = None, include_shipped: bool = True) -> Catalog:
    """Layer the shipped catalog, then each file in `extra` (missing user files are skipped by the caller)."""
    layers = _read_layers(extra, include_shipped)
    merged = _Merged()
    for data, origin in layers:
        merged.add(data, origin)
    experts: dict[str, Expert] = {}
    for (kind, name), table in merged.entries.items():
        if name in experts:
            raise CatalogError(f"Catalog {merged.origins[(kind, name)]['']}: '{name}' names both an expert and an embedder.")
        experts[name] = _parse_entry(name, table, kind, merged.origins[(kind, name)])
    for e in experts.values():
        if e.kind == "corpus" and e.reader and (e.reader not in experts or experts[e.reader].kind != "llm"):
            raise CatalogError(f"Catalog {e.origin}, [experts.\"{e.name}\"], key 'reader': no model named '{e.reader}'.")
    where = merged.defaults_origin
    embedder_name = merged.setting("embedder", str, "")
    if embedder_name not in experts or experts[embedder_name].kind != "embedder":
        raise CatalogError(f"Catalog {where.get('embedder', '?')}, [defaults], key 'embedder': '{embedder_name}' is not an [embedders] entry.")
    default_names = tuple(n for n, e in experts.items() if e.kind == "llm" and e.default)
    if not default_names:
        raise CatalogError("The catalog marks no expert `default = true`; complm needs at least one.")
    role_names = {}
    for role in ("planner", "aggregator", "fallback"):
        pinned = merged.setting(role, str, "")
        if pinned:
            if pinned not in experts or experts[pinned].kind != "llm":
                raise CatalogError(f"Catalog {where[role]}, [defaults], key '{role}': no expert named '{pinned}'.")
            role_names[role] = pinned
    threshold = float(merged.setting("route_threshold", (int, float), 0.3))
    if not -1.0 <= threshold <= 1.0:  # a cosine score; 5 would send every step to the fallback (and NaN fails this too)
        raise CatalogError(f"Catalog {where.get('route_threshold', '?')}, [defaults], key 'route_threshold': "
                           f"must be from -1 to 1, not {threshold:g}.")
    return Catalog(
        experts=experts, embedder_name=embedder_name, default_names=default_names,
        route_threshold=threshold, files=tuple(Path(o) for _, o in layers), role_names=role_names,
    )


_DEFAULTS_KEYS = frozenset({"embedder", "planner", "aggregator", "fallback", "route_threshold"})


def catalog_for(settings) -> Catalog:
    """The catalog a command uses: shipped < user catalog < --catalog / COMPLM_CATALOG."""
    extra = []
    if settings.user_catalog.is_file():
        extra.append(settings.user_catalog)
    if settings.catalog:
        extra.append(settings.catalog)
    return load_catalog(extra)
