import pytest

from complm_cli.cache.config import load_settings, parse_size
from complm_cli.errors import CatalogError, UsageError


def test_layers_defaults_file_env_flags(isolated, monkeypatch):
    assert load_settings().cache_dir == isolated["cache"]
    assert load_settings().workers == 0
    isolated["config"].mkdir(parents=True)
    (isolated["config"] / "config.toml").write_text('workers = 3\nseed = 5\nmax_memory = "2GB"\n')
    s = load_settings()
    assert (s.workers, s.seed, s.max_memory) == (3, 5, 2_000_000_000)
    monkeypatch.setenv("COMPLM_WORKERS", "4")
    assert load_settings().workers == 4
    assert load_settings().replace(workers=1, seed=None).workers == 1  # flags win; None leaves it


def test_offline_env(monkeypatch):
    monkeypatch.setenv("COMPLM_OFFLINE", "1")
    assert load_settings().offline is True


def test_bad_config(isolated, monkeypatch):
    isolated["config"].mkdir(parents=True)
    (isolated["config"] / "config.toml").write_text("nonsense = 1\n")
    with pytest.raises(CatalogError, match="unknown key 'nonsense'"):
        load_settings()
    (isolated["config"] / "config.toml").write_text("workers = [\n")
    with pytest.raises(CatalogError, match="not valid TOML"):
        load_settings()
    (isolated["config"] / "config.toml").unlink()
    monkeypatch.setenv("COMPLM_WORKERS", "many")
    with pytest.raises(UsageError, match="COMPLM_WORKERS"):
        load_settings()


@pytest.mark.parametrize("text, value", [("8GB", 8_000_000_000), ("8GiB", 8 * 1024**3), ("512M", 512_000_000),
                                         ("1.5g", 1_500_000_000), (1234, 1234), ("100", 100)])
def test_parse_size(text, value):
    assert parse_size(text) == value


def test_parse_size_rejects_nonsense():
    with pytest.raises(UsageError):
        parse_size("lots")


# --- one check for the config file, the environment and flags ----------------------------


@pytest.mark.parametrize("line, key", [
    ("workers = -3", "workers"),
    ("workers = 2.5", "workers"),
    ("workers = true", "workers"),
    ("threads = 0", "threads"),
    ("gpu_layers = -5", "gpu_layers"),
    ("max_memory = -1", "max_memory"),
    ('max_memory = "lots"', "max_memory"),
    ('offline = "nope"', "offline"),
    ("node_timeout = 0", "node_timeout"),
    ("node_timeout = nan", "node_timeout"),
    ("hub_timeout = -1", "hub_timeout"),
    ("route_threshold = inf", "route_threshold"),
    ("stream_plan = 3", "stream_plan"),
    ('draft = "maybe"', "draft"),
    ("votes = 0", "votes"),
    ("votes = 10", "votes"),
])
def test_bad_config_value_names_file_and_key(isolated, line, key):
    isolated["config"].mkdir(parents=True)
    path = isolated["config"] / "config.toml"
    path.write_text(line + "\n")
    with pytest.raises(CatalogError) as err:
        load_settings()
    assert str(path) in err.value.message and f"'{key}'" in err.value.message, err.value.message


@pytest.mark.parametrize("var, value", [
    ("COMPLM_THREADS", "0"), ("COMPLM_GPU_LAYERS", "-5"), ("COMPLM_NODE_TIMEOUT", "nan"),
    ("COMPLM_NODE_TIMEOUT", "-1"), ("COMPLM_MAX_MEMORY", "-1"), ("COMPLM_OFFLINE", "nope"), ("COMPLM_WORKERS", "2.5"),
    ("COMPLM_STREAM_PLAN", "maybe"), ("COMPLM_VOTES", "three"), ("COMPLM_VOTES", "0"),
])
def test_bad_environment_value_names_the_variable(monkeypatch, var, value):
    monkeypatch.setenv(var, value)
    with pytest.raises(UsageError, match=var):
        load_settings()


@pytest.mark.parametrize("text, value", [("0", False), ("false", False), ("no", False), ("OFF", False), ("1", True), ("yes", True)])
def test_offline_words(monkeypatch, text, value):
    monkeypatch.setenv("COMPLM_OFFLINE", text)
    assert load_settings().offline is value


def test_drafting_is_on_unless_turned_off(isolated, monkeypatch):
    assert load_settings().draft is True
    monkeypatch.setenv("COMPLM_DRAFT", "0")
    assert load_settings().draft is False


def test_votes_default_to_seven_and_one_turns_them_off(isolated, monkeypatch):
    assert load_settings().votes == 7
    monkeypatch.setenv("COMPLM_VOTES", "1")
    assert load_settings().votes == 1
    assert load_settings(flags={"votes": 3}).votes == 3


def test_stream_plan_is_on_unless_turned_off(isolated, monkeypatch):
    assert load_settings().stream_plan is True
    isolated["config"].mkdir(parents=True)
    (isolated["config"] / "config.toml").write_text("stream_plan = false\n")
    assert load_settings().stream_plan is False
    monkeypatch.setenv("COMPLM_STREAM_PLAN", "on")
    assert load_settings().stream_plan is True


@pytest.mark.parametrize("flags, flag", [
    ({"node_timeout": 0.0}, "--timeout"), ({"node_timeout": -1.0}, "--timeout"), ({"node_timeout": float("nan")}, "--timeout"),
    ({"gpu_layers": -5}, "--gpu-layers"), ({"threads": 0}, "--threads"), ({"max_memory": "lots"}, "--max-memory"),
    ({"max_memory": "-1"}, "--max-memory"), ({"votes": 0}, "--votes"), ({"votes": 12}, "--votes"),
])
def test_bad_flag_value_names_the_flag(flags, flag):
    with pytest.raises(UsageError, match=flag):
        load_settings(flags=flags)


def test_flags_win_and_are_checked_like_the_rest(monkeypatch):
    monkeypatch.setenv("COMPLM_GPU_LAYERS", "3")
    s = load_settings(flags={"gpu_layers": -1, "node_timeout": 2.5, "max_memory": "1GB", "seed": None})
    assert (s.gpu_layers, s.node_timeout, s.max_memory) == (-1, 2.5, 1_000_000_000)


def test_library_replace_is_checked_too():
    with pytest.raises(UsageError, match="node_timeout"):
        load_settings().replace(node_timeout=0)


def test_cache_dir_that_is_a_file_is_refused(tmp_path, monkeypatch):
    (tmp_path / "afile").write_text("x")
    monkeypatch.setenv("COMPLM_CACHE_DIR", str(tmp_path / "afile"))
    with pytest.raises(UsageError, match="COMPLM_CACHE_DIR.*not a folder"):
        load_settings()


def test_paths_in_the_config_file_are_relative_to_it(isolated, monkeypatch, tmp_path):
    monkeypatch.delenv("COMPLM_CACHE_DIR")
    monkeypatch.chdir(tmp_path)  # somewhere else than the config folder
    isolated["config"].mkdir(parents=True)
    (isolated["config"] / "config.toml").write_text('cache_dir = "models"\ncatalog = "mine.toml"\n')
    s = load_settings()
    assert s.cache_dir == isolated["config"] / "models" and s.catalog == isolated["config"] / "mine.toml"
    (isolated["config"] / "config.toml").write_text("cache_dir = 5\n")
    with pytest.raises(CatalogError, match="cache_dir must be a path"):
        load_settings()
