"""Settings: defaults < config file < COMPLM_* environment < command-line flags.

Paths come from platformdirs; COMPLM_CACHE_DIR and COMPLM_CONFIG_DIR move them
(the tests point both at a temp folder).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from complm_cli.errors import CatalogError, UsageError

APP = "complm"


def _default_cache_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_cache_dir(APP, appauthor=False))


def _default_config_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_config_dir(APP, appauthor=False))


def _default_data_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir(APP, appauthor=False))


def total_ram_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 * 1024**3


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


_SIZE_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([kmgt]?i?b?)?\s*$", re.I)
_UNITS = {"": 1, "b": 1, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}


def parse_size(text: str | int | float) -> int:
    """'8GB', '8GiB', '512M', 1234 -> bytes."""
    if isinstance(text, (int, float)):
        return int(text)
    m = _SIZE_RE.match(str(text))
    if not m:
        raise UsageError(f"'{text}' is not a size; write it like 8GB or 512MiB.")
    number, unit = float(m.group(1)), (m.group(2) or "").lower()
    binary = "i" in unit
    letter = unit[:1] if unit[:1] in "kmgt" else ""
    scale = 1024 ** "_kmgt".index(letter) if (binary and letter) else _UNITS[letter]
    return int(number * scale)


_DURATION_RE = re.compile(r"^\s*(-?)((?:[0-9]*\.?[0-9]+\s*(?:ms|h|m|s)?\s*)+)$", re.I)
_DURATION_PART = re.compile(r"([0-9]*\.?[0-9]+)\s*(ms|h|m|s)?", re.I)
_SECONDS = {"h": 3600, "m": 60, "s": 1, "ms": 0.001, None: 1}


def parse_duration(value: Any) -> float | None:
    """Seconds from 300, '300', '5m', '1h30m', '90s' or '-1' (Ollama's keep_alive forms); None if it is none."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    m = _DURATION_RE.match(str(value))
    if not m:
        return None
    total = sum(float(n) * _SECONDS[(unit or "").lower() or None] for n, unit in _DURATION_PART.findall(m.group(2)))
    return -total if m.group(1) else total


def format_duration(seconds: float) -> str:
    """'5m', '90s', '1h30m': a duration as parse_duration reads it."""
    seconds = round(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return "".join(f"{n}{u}" for n, u in ((h, "h"), (m, "m"), (s, "s")) if n) or "0s"


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write a file so that readers see the old or the new content, never a part."""
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def format_size(n: int | float) -> str:
    n = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


@dataclass
class Settings:
    cache_dir: Path = field(default_factory=_default_cache_dir)
    config_dir: Path = field(default_factory=_default_config_dir)
    data_dir: Path = field(default_factory=_default_data_dir)  # the run log (runlog.py)
    catalog: Path | None = None  # one more catalog file, layered over the shipped and user ones
    offline: bool = False
    workers: int = 0  # 0: the default (4)
    threads: int = field(default_factory=cpu_count)
    gpu_layers: int | None = None  # None: each expert's catalog setting, else 0; a flag wins over both
    max_memory: int = 0  # bytes of resident models; 0: 60% of RAM
    node_timeout: float = 180.0
    seed: int = 0
    route_threshold: float | None = None  # None: the catalog's
    hub_timeout: float = 5.0  # seconds to reach the Hub before falling over to a mirror
    stream_plan: bool = True  # run each plan step as soon as the planner has written it
    draft: bool = True  # guess the question's words the planner copies, for the model to check (drafts.py)
    votes: int = 7  # plans written for a word problem, the value most compute wins (votes.py); 1: one plan
    corpora: tuple[str, ...] = ()  # corpora that are knowledge experts for every run (--corpus, COMPLM_CORPUS)
    daemon: bool = True  # ask and graph go through a background server that keeps the models loaded (daemon/)
    keep_alive: float = 300.0  # seconds that server keeps an unused model loaded; below 0: for as long as it runs
    idle_exit: float = 1800.0  # seconds without a request after which that server exits

    @property
    def config_file(self) -> Path:
        return self.config_dir / "config.toml"

    @property
    def user_catalog(self) -> Path:
        return self.config_dir / "models.toml"

    @property
    def models_dir(self) -> Path:
        return self.cache_dir / "models"

    def memory_budget(self) -> int:
        return self.max_memory or int(total_ram_bytes() * 0.6)

    def worker_count(self) -> int:
        # Not tied to the cores: nodes of one model decode in one batch (experts/engine.py),
        # and engines of different models divide the threads among themselves.
        return self.workers or 4

    def replace(self, **changes: Any) -> "Settings":
        """A copy with `changes` (None leaves a setting as it is), each checked like a flag."""
        changes = {k: check_setting(k, v, f"{k}={v!r}", "argument") for k, v in changes.items() if v is not None}
        return dataclasses.replace(self, **changes)


_ENV = {
    "cache_dir": "COMPLM_CACHE_DIR",
    "data_dir": "COMPLM_DATA_DIR",
    "catalog": "COMPLM_CATALOG",
    "offline": "COMPLM_OFFLINE",
    "workers": "COMPLM_WORKERS",
    "threads": "COMPLM_THREADS",
    "gpu_layers": "COMPLM_GPU_LAYERS",
    "max_memory": "COMPLM_MAX_MEMORY",
    "node_timeout": "COMPLM_NODE_TIMEOUT",
    "seed": "COMPLM_SEED",
    "route_threshold": "COMPLM_ROUTE_THRESHOLD",
    "hub_timeout": "COMPLM_HUB_TIMEOUT",
    "stream_plan": "COMPLM_STREAM_PLAN",
    "draft": "COMPLM_DRAFT",
    "votes": "COMPLM_VOTES",
    "corpora": "COMPLM_CORPUS",
    "daemon": "COMPLM_DAEMON",
    "keep_alive": "COMPLM_KEEP_ALIVE",
    "idle_exit": "COMPLM_IDLE_EXIT",
}


# The flag that sets each setting, for messages about a bad flag value.
FLAGS = {
    "catalog": "--catalog", "offline": "--offline", "workers": "--workers", "threads": "--threads",
    "gpu_layers": "--gpu-layers", "max_memory": "--max-memory", "node_timeout": "--timeout", "seed": "--seed",
    "votes": "--votes", "corpora": "--corpus", "daemon": "--no-daemon", "keep_alive": "--keep-alive",
}
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _number(value: Any, kind: type) -> int | float:
    # TOML gives ints and floats, the environment and flags strings or numbers;
    # `true` or `2.5` for a count is a mistake, not 1 or 2.
    if isinstance(value, bool):
        raise ValueError
    if kind is int:
        if isinstance(value, float):
            raise ValueError
        return int(str(value).strip()) if isinstance(value, str) else int(value)
    return float(value)


def _checked(name: str, value: Any) -> tuple[Any, str | None]:
    """(the value coerced to the setting's type, or a phrase saying why it is not valid)."""
    if name in ("cache_dir", "config_dir", "data_dir", "catalog"):
        path = Path(os.path.expanduser(str(value)))
        if name != "catalog" and path.exists() and not path.is_dir():
            return None, "is not a folder (it names a file)"
        return path, None
    if name in ("keep_alive", "idle_exit"):
        seconds = parse_duration(value)
        if seconds is None or (name == "idle_exit" and seconds <= 0):
            return None, ("must be a time like 5m, 90s or 1h (0: unload at once; -1: keep while the server runs)"
                          if name == "keep_alive" else "must be a time above 0, like 30m or 1h")
        return seconds, None
    if name in ("offline", "stream_plan", "draft", "daemon"):
        if isinstance(value, bool):
            return value, None
        word = str(value).strip().lower()
        if word in _TRUE or word in _FALSE:
            return word in _TRUE, None
        return None, "must be true or false (1/0, yes/no, on/off)"
    if name == "corpora":
        from complm_cli.corpus.index import is_name

        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or not all(isinstance(i, str) for i in items):
            return None, "must be corpus names (a list, or names separated by commas)"
        names = tuple(dict.fromkeys(i.strip() for i in items if i.strip()))
        bad = [n for n in names if not is_name(n)]
        return (None, f"names '{bad[0]}', which is not a corpus name") if bad else (names, None)
    if name == "max_memory":
        try:
            size = parse_size(value) if not isinstance(value, bool) else None
        except (UsageError, ValueError, OverflowError):
            size = None
        if size is None or size < 0:
            return None, "must be a size like 8GB or 512MiB (0: 60% of RAM)"
        return size, None
    kind = float if name in ("node_timeout", "hub_timeout", "route_threshold") else int
    try:
        number = _number(value, kind)
    except (TypeError, ValueError, OverflowError):
        return None, f"must be {'a number' if kind is float else 'a whole number'}"
    problem = {
        "workers": "must be 0 (the default, 4) or more" if number < 0 else None,
        "threads": "must be 1 or more" if number < 1 else None,
        "votes": "must be from 1 (one plan) to 9" if not 1 <= number <= 9 else None,
        "gpu_layers": "must be -1 (all layers) or 0 or more" if number < -1 else None,
        "node_timeout": "must be a number of seconds above 0" if not (math.isfinite(number) and number > 0) else None,
        "hub_timeout": "must be a number of seconds above 0" if not (math.isfinite(number) and number > 0) else None,
        "route_threshold": "must be a number from -1 to 1" if not (math.isfinite(number) and -1 <= number <= 1) else None,
    }.get(name)
    return (None, problem) if problem else (number, None)


def check_setting(name: str, value: Any, where: str, origin: str) -> Any:
    """The one check every setting passes, wherever it comes from; returns the coerced value.

    `origin` is 'file' (a config file: exit 5, naming the file and key), 'env'
    or 'flag' (exit 2, naming the variable or flag) or 'argument' (a library
    caller's Settings.replace)."""
    if name not in SETTING_NAMES:
        raise UsageError(f"'{name}' is not a setting; known: {', '.join(sorted(SETTING_NAMES))}.")
    coerced, problem = _checked(name, value)
    if problem is None:
        return coerced
    if origin == "file":
        raise CatalogError(f"The config file {where}, key '{name}': '{value}' is not valid; {name} {problem}.")
    if origin == "env":
        raise UsageError(f"{where}={value!r} is not valid: {name} {problem}.")
    if origin == "flag":
        raise UsageError(f"{where} {value}: the value {problem}.")
    raise UsageError(f"{where}: {name} {problem}.")


SETTING_NAMES = frozenset(f.name for f in dataclasses.fields(Settings))


def load_settings(env: dict[str, str] | None = None, flags: dict[str, Any] | None = None) -> Settings:
    """Defaults < config file < COMPLM_* environment < `flags` (None: not given), each value checked."""
    env = dict(os.environ if env is None else env)
    base: dict[str, Any] = {}
    if env.get("COMPLM_CONFIG_DIR"):
        base["config_dir"] = check_setting("config_dir", env["COMPLM_CONFIG_DIR"], "COMPLM_CONFIG_DIR", "env")
    settings = Settings(**base)
    values: dict[str, Any] = {}
    path = settings.config_file
    if path.exists() and not path.is_file():
        raise CatalogError(f"The config file {path} is not a file (a folder?); remove it, or put the settings in a file there.")
    if path.is_file():
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError) as exc:
            raise CatalogError(f"The config file {path} is not valid TOML ({exc}); fix or remove it.") from None
        known = SETTING_NAMES - {"config_dir"}
        for key, value in data.items():
            if key not in known:
                raise CatalogError(f"The config file {path} has an unknown key '{key}'; known keys: {', '.join(sorted(known))}.")
            if key in ("cache_dir", "data_dir", "catalog"):
                if not isinstance(value, str):
                    raise CatalogError(f"The config file {path}, key '{key}': '{value}' is not valid; {key} must be a path, in quotes.")
                # A relative path in the file is relative to the file, not to wherever complm runs.
                value = str(path.parent / os.path.expanduser(value))
            values[key] = check_setting(key, value, str(path), "file")
    for name, var in _ENV.items():
        if env.get(var, "") != "":
            values[name] = check_setting(name, env[var], var, "env")
    for name, value in (flags or {}).items():
        if value is not None:
            values[name] = check_setting(name, value, FLAGS.get(name, name), "flag")
    return dataclasses.replace(settings, **values)
