import pytest

from complm_cli.config import load_settings, parse_size
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
