import re
from pathlib import Path

import pytest

from complm_cli.cache.catalog import load_catalog, safe_relpath
from complm_cli.errors import CatalogError, NotFoundError

GOOD_ENTRY = '''
[experts."my-expert"]
description = "A test expert."
roles = ["expert"]
domains = ["testing"]
examples = ["What is a test?"]
file = "my-expert.gguf"
size = 10
sha256 = "{sha}"
[[experts."my-expert".sources]]
type = "url"
url = "http://127.0.0.1:1/my-expert.gguf"
'''.replace("{sha}", "0" * 64)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "extra.toml"
    path.write_text(text)
    return path


def test_shipped_catalog_is_valid():
    cat = load_catalog()
    assert set(cat.default_names) == {"smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"}
    assert cat.embedder.name == "all-minilm-l6-v2"
    assert cat.for_role("planner").name == "qwen2.5-coder-1.5b"
    coder = cat.get("qwen2.5-coder-1.5b")
    # the 22-part mirror is spelled with a template and expands in order
    mirror = coder.sources[1]
    assert len(mirror.wheels) == 22 and mirror.members[0].endswith("part01.bin") and mirror.members[-1].endswith("part22.bin")
    for expert in cat.llms():
        assert expert.description and expert.roles and expert.sources
        assert expert.sources[0].kind == "hub"
        if expert.default:
            assert expert.sha256 and expert.size


def test_non_default_hub_experts_exist_for_other_domains():
    cat = load_catalog()
    extra = [e for e in cat.llms() if not e.default]
    domains = " ".join(d for e in extra for d in e.domains).lower()
    assert "math" in domains
    assert all(all(s.kind == "hub" for s in e.sources) for e in extra)


def test_user_catalog_adds_and_overrides(tmp_path):
    path = write(tmp_path, GOOD_ENTRY + '''
[experts."smollm2-135m"]
description = "Overridden."
[experts."smollm2-135m".generation]
max_tokens = 7
''')
    cat = load_catalog([path])
    assert cat.get("my-expert").origin == str(path)
    small = cat.get("smollm2-135m")
    assert small.description == "Overridden."
    assert small.generation.max_tokens == 7
    assert small.generation.n_ctx == 2048  # keys not overridden are kept
    assert small.sha256.startswith("b179c952")


def test_catalog_for_layers_user_catalog_and_flag(tmp_path, isolated, monkeypatch):
    from complm_cli.cache.catalog import catalog_for
    from complm_cli.cache.config import load_settings

    isolated["config"].mkdir(parents=True)
    (isolated["config"] / "models.toml").write_text('[experts."smollm2-135m"]\ndescription = "from user"\n')
    flag = write(tmp_path, '[experts."smollm2-135m"]\ndescription = "from flag"\n')
    assert catalog_for(load_settings()).get("smollm2-135m").description == "from user"
    monkeypatch.setenv("COMPLM_CATALOG", str(flag))
    assert catalog_for(load_settings()).get("smollm2-135m").description == "from flag"


@pytest.mark.parametrize(
    "text, words",
    [
        ("[experts.x\ndescription = 1", ["not valid TOML"]),
        (GOOD_ENTRY.replace('description = "A test expert."\n', ""), ["my-expert", "'description'", "missing"]),
        (GOOD_ENTRY.replace('roles = ["expert"]', 'roles = ["wizard"]'), ["roles", "wizard"]),
        (GOOD_ENTRY.replace('file = "my-expert.gguf"', 'file = "../../etc/passwd"'), ["file", "inside the cache"]),
        (GOOD_ENTRY.replace('file = "my-expert.gguf"', 'file = "sub/dir.gguf"'), ["file"]),
        (GOOD_ENTRY.replace('sha256 = "' + "0" * 64 + '"', 'sha256 = "abc"'), ["sha256", "64 hex"]),
        (GOOD_ENTRY.replace('size = 10', 'size = "big"'), ["size", "integer"]),
        (GOOD_ENTRY.replace('type = "url"', 'type = "ftp"'), ["sources[0].type", "ftp"]),
        (GOOD_ENTRY.replace('[experts."my-expert"]', '[experts."../evil"]'), ["name"]),
        (GOOD_ENTRY + "\nbogus = 1\n", ["bogus"]),
        ("[models]\n", ["unknown table"]),
        ('[defaults]\nplanner = "nobody"\n', ["planner", "nobody"]),
        ("defaults = 3\n", ["[defaults]", "must be a table"]),
        ('[defaults]\naggregater = "x"\n', ["aggregater", "unknown", "aggregator"]),  # a typo is not ignored
        ("[defaults]\nroute_threshold = 5\n", ["route_threshold", "from -1 to 1"]),
        ("[defaults]\nroute_threshold = nan\n", ["route_threshold", "from -1 to 1"]),
    ],
)
def test_bad_catalog_names_file_entry_and_key(tmp_path, text, words):
    assert_catalog_error(tmp_path, text, words)


def assert_catalog_error(tmp_path: Path, text: str, words: list[str]) -> str:
    path = write(tmp_path, text)
    with pytest.raises(CatalogError) as err:
        load_catalog([path])
    message = err.value.message
    assert str(path) in message
    for word in words:
        assert word in message, message
    return message


def test_sha_may_be_left_to_the_hub_only_with_a_hub_source(tmp_path):
    path = write(tmp_path, GOOD_ENTRY.replace('sha256 = "' + "0" * 64 + '"\n', ""))
    with pytest.raises(CatalogError, match="sha256"):
        load_catalog([path])


def test_missing_catalog_file_and_unknown_expert(tmp_path):
    with pytest.raises(CatalogError, match="does not exist"):
        load_catalog([tmp_path / "nope.toml"])
    with pytest.raises(NotFoundError, match="No expert named 'nope'"):
        load_catalog().get("nope")


@pytest.mark.parametrize("name, ok", [("a.gguf", True), ("../a", False), ("/abs", False), (".hidden", False),
                                      ("a/b", False), ("a\\b", False), ("", False)])
def test_safe_relpath(name, ok):
    assert safe_relpath(name, allow_dirs=False) is ok


def test_profile_texts_hold_description_domains_and_examples():
    coder = load_catalog().get("qwen2.5-coder-0.5b")
    texts = coder.profile_texts
    assert "programming" in texts[0] and texts[1:] == coder.examples


PYPI_ENTRY = GOOD_ENTRY.replace('type = "url"\nurl = "http://127.0.0.1:1/my-expert.gguf"',
                                'type = "pypi"\nwheels = ["my-wheel==1.0"]\nmembers = ["my_wheel/m.gguf"]')
TEMPLATE_ENTRY = GOOD_ENTRY.replace('type = "url"\nurl = "http://127.0.0.1:1/my-expert.gguf"',
                                    'type = "pypi"\nparts = 2\nwheels = "my-wheel-part{n}==1.0"\nmembers = "p{n}/m.bin"')


@pytest.mark.parametrize(
    "text, words",
    [
        # A requirement that starts with '-' would reach pip as an option (`-r==1.0` reads a file).
        (PYPI_ENTRY.replace("my-wheel==1.0", "-r==1.0"), ["sources[0].wheels", "name==1.0"]),
        (PYPI_ENTRY.replace("my-wheel==1.0", "--index-url==http://evil"), ["sources[0].wheels"]),
        (PYPI_ENTRY.replace("my-wheel==1.0", "my-wheel==-1"), ["sources[0].wheels"]),
        (PYPI_ENTRY.replace('wheels = ["my-wheel==1.0"]', "wheels = []"), ["sources[0].wheels"]),
        (TEMPLATE_ENTRY.replace("parts = 2", "parts = -1"), ["sources[0].parts", "at least 1"]),
        (TEMPLATE_ENTRY.replace("parts = 2", "parts = 0"), ["sources[0].parts"]),
        (TEMPLATE_ENTRY.replace("part{n}==", "part{k}=="), ["sources[0].wheels", "{k}"]),
        (TEMPLATE_ENTRY.replace("p{n}/m.bin", "p{n:zz}/m.bin"), ["sources[0].members"]),
        (TEMPLATE_ENTRY.replace("p{n}/m.bin", "p{}/m.bin"), ["sources[0].members"]),
        (GOOD_ENTRY + '[experts."my-expert".generation]\nn_ctx = -5\n', ["generation.n_ctx", "positive"]),
        (GOOD_ENTRY + '[experts."my-expert".generation]\nmax_tokens = 0\n', ["generation.max_tokens", "positive"]),
        (GOOD_ENTRY + '[experts."my-expert".generation]\ngpu_layers = -5\n', ["generation.gpu_layers", "-1"]),
        (GOOD_ENTRY + '[experts."my-expert".generation]\ntemperature = -1\n', ["generation.temperature"]),
        (GOOD_ENTRY + '[experts."my-expert".generation]\nmax_token = 9\n', ["generation.max_token", "not a key"]),
        # The manifest shares the entry's folder: a model file by that name would be overwritten by it.
        (GOOD_ENTRY.replace('file = "my-expert.gguf"', 'file = "complm.json"'), ["file", "complm.json"]),
        (GOOD_ENTRY.replace('file = "my-expert.gguf"', 'file = "COMPLM.JSON"'), ["file"]),
        (GOOD_ENTRY.replace('[experts."my-expert"]', '[experts."-rf"]').replace('"my-expert".sources', '"-rf".sources'), ["name"]),
    ],
    ids=['dash-r', 'dash-index-url', 'dash-version', 'no-wheels', 'parts-negative', 'parts-zero', 'unknown-placeholder', 'bad-format-spec', 'positional-placeholder', 'n_ctx-negative', 'max_tokens-zero', 'gpu_layers', 'temperature', 'unknown-generation-key', 'file-is-manifest', 'file-is-manifest-upper', 'name-dash'],
)
def test_catalog_validation_gaps(tmp_path, text, words):
    message = assert_catalog_error(tmp_path, text, words)
    assert "my-expert" in message or "-rf" in message


def test_embedder_dir_cannot_be_the_manifest(tmp_path):
    path = write(tmp_path, '[embedders."all-minilm-l6-v2"]\ndir = "complm.json"\n')
    with pytest.raises(CatalogError, match="complm.json"):
        load_catalog([path])


def test_embedder_hub_revision_is_pinned():
    (hub, *_) = load_catalog().embedder.sources
    assert re.fullmatch(r"[0-9a-f]{40}", hub.revision), hub.revision


def test_bad_template_is_exit_5_for_list_too(tmp_path, isolated):
    from typer.testing import CliRunner

    from complm_cli.cli.app import app

    path = write(tmp_path, TEMPLATE_ENTRY.replace("part{n}==", "part{k}=="))
    result = CliRunner().invoke(app, ["list", "--catalog", str(path)])
    assert result.exit_code == 5, result.output
    assert "{k}" in result.output and "Traceback" not in result.output


def test_an_expert_name_that_starts_with_a_dash_says_why_it_is_refused(tmp_path):
    from complm_cli.cache.catalog import load_catalog
    from complm_cli.errors import CatalogError

    path = tmp_path / "c.toml"
    path.write_text('[experts."--all"]\ndescription = "x"\nfile = "x.gguf"\nroles = ["expert"]\n'
                    'sha256 = "' + "a" * 64 + '"\nsources = [{ type = "path", path = "/x" }]\n')
    with pytest.raises(CatalogError, match="would read as an option"):
        load_catalog([path])
