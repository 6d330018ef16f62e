"""Settings: defaults < config file < COMPLM_* environment < command-line flags.

Paths come from platformdirs; COMPLM_CACHE_DIR and COMPLM_CONFIG_DIR move them
(the tests point both at a temp folder).
"""

from __future__ import annotations

import contextlib
import dataclasses
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
    catalog: Path | None = None  # one more catalog file, layered over the shipped and user ones
    offline: bool = False
    workers: int = 0  # 0: fit the machine
    threads: int = field(default_factory=cpu_count)
    gpu_layers: int | None = None  # None: each expert's catalog setting, else 0; a flag wins over both
    max_memory: int = 0  # bytes of resident models; 0: 60% of RAM
    node_timeout: float = 180.0
    seed: int = 0
    route_threshold: float | None = None  # None: the catalog's
    hub_timeout: float = 5.0  # seconds to reach the Hub before falling over to a mirror

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
        return self.workers or max(1, min(4, self.threads))

    def replace(self, **changes: Any) -> "Settings":
        changes = {k: v for k, v in changes.items() if v is not None}
        return dataclasses.replace(self, **changes)


_ENV = {
    "cache_dir": "COMPLM_CACHE_DIR",
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
}


def _coerce(name: str, value: Any, source: str) -> Any:
    kind = {f.name: f.type for f in dataclasses.fields(Settings)}[name]
    try:
        if name in ("cache_dir", "config_dir", "catalog"):
            return Path(os.path.expanduser(str(value)))
        if name == "offline":
            if isinstance(value, bool):
                return value
            return str(value).strip().lower() in ("1", "true", "yes", "on")
        if name == "max_memory":
            return parse_size(value)
        if "float" in str(kind):
            return float(value)
        return int(value)  # int, or int | None
    except (TypeError, ValueError):
        error = UsageError if source.startswith("COMPLM_") else CatalogError
        raise error(f"{source}: '{value}' is not a valid value for {name}.") from None


def load_settings(env: dict[str, str] | None = None) -> Settings:
    env = dict(os.environ if env is None else env)
    base: dict[str, Any] = {}
    if env.get("COMPLM_CONFIG_DIR"):
        base["config_dir"] = Path(env["COMPLM_CONFIG_DIR"]).expanduser()
    settings = Settings(**base)
    values: dict[str, Any] = {}
    path = settings.config_file
    if path.is_file():
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError) as exc:
            raise CatalogError(f"The config file {path} is not valid TOML ({exc}); fix or remove it.") from None
        known = {f.name for f in dataclasses.fields(Settings)} - {"config_dir"}
        for key, value in data.items():
            if key not in known:
                raise CatalogError(f"The config file {path} has an unknown key '{key}'; known keys: {', '.join(sorted(known))}.")
            values[key] = _coerce(key, value, str(path))
    for name, var in _ENV.items():
        if env.get(var, "") != "":
            values[name] = _coerce(name, env[var], var)
    result = settings.replace(**values)
    for name in ("workers", "threads", "gpu_layers", "node_timeout", "hub_timeout"):
        value = getattr(result, name)
        low = -1 if name == "gpu_layers" else 0
        if value is not None and (value < low or (name.endswith("timeout") and value <= 0)):
            raise UsageError(f"{name} = {value} is out of range; check {_ENV[name]} and {result.config_file}.")
    return result
