"""The router with the real embedder (all-MiniLM-L6-v2, pulled through the PyPI mirror)."""

import json

import pytest

from complm_cli.cache.catalog import load_catalog
from complm_cli.compose.route import Embedder, Router, VectorCache, score_matrix

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def embedder(pulled_models):
    cat = load_catalog()
    return Embedder(pulled_models / "models" / cat.embedder.name / cat.embedder.file, cat.embedder.name, threads=1).start()


def make_router(embedder, cache_dir, threshold=None, competence=False):
    """By default topic alone (no margins): what these tests check is the profiles."""
    cat = load_catalog()
    return Router(cat.routable(), cat.for_role("fallback"), embedder, VectorCache(cache_dir, "test"),
                  cat.route_threshold if threshold is None else threshold, competence=competence)


CODE = ["Write a Python function that returns the factorial of n.", "What is the time complexity of binary search?",
        "Which data structure is last in, first out?", "How do you open a file for reading in Python?"]
WORDS = ["What is a synonym for big?", "What is the plural of goose?", "What is the opposite of generous?"]
OFF_TOPIC = ["asdf qwerty zxcv", "Recommend a good pizza topping", "I feel sad today"]


def test_code_questions_go_to_the_code_expert(embedder, tmp_path):
    routes = make_router(embedder, tmp_path).route(CODE)
    assert [r.expert for r in routes] == ["qwen2.5-coder-0.5b"] * len(CODE)
    assert all(r.reason == "score" and r.score >= load_catalog().route_threshold for r in routes)


def test_word_questions_go_to_the_language_expert(embedder, tmp_path):
    assert {r.expert for r in make_router(embedder, tmp_path).route(WORDS)} == {"smollm2-135m"}


def test_off_topic_questions_go_to_the_fallback(embedder, tmp_path):
    routes = make_router(embedder, tmp_path).route(OFF_TOPIC)
    assert all(r.reason == "fallback" and r.expert == "qwen2.5-coder-1.5b" for r in routes)
    # the score shown is still the best candidate's, so a user sees why it fell back
    assert all(r.score == max(r.scores.values()) < load_catalog().route_threshold for r in routes)


def test_scores_cover_every_candidate(embedder, tmp_path):
    (route,) = make_router(embedder, tmp_path).route(["What is 17 times 23?"])
    assert set(route.scores) == {"smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"}


def test_profile_vectors_are_cached_on_disk(embedder, tmp_path):
    make_router(embedder, tmp_path).profiles()
    cached = json.loads((tmp_path / "test.json").read_text())
    texts = [t for e in load_catalog().routable() for t in e.profile_texts]
    assert len(cached) == len(set(texts))

    class NoEncode:
        def encode(self, texts):
            raise AssertionError("profiles should come from the cache")

    again = Router(load_catalog().routable(), load_catalog().for_role("fallback"), NoEncode(), VectorCache(tmp_path, "test"), 0.3)
    assert len(again.profiles()) == 3


def test_scoring_rules(embedder):
    q = embedder.encode(["hello there"])
    profile = embedder.encode(["hello", "good morning", "tax law"])
    for rule in ("topk", "max", "centroid", "description"):
        assert score_matrix(q, [profile], rule).shape == (1, 1)
    top1 = score_matrix(q, [profile], "max")[0, 0]
    top3 = score_matrix(q, [profile], "topk", k=3)[0, 0]
    assert top1 >= top3


def test_competence_margins_keep_general_questions_on_the_fallback(embedder, tmp_path):
    """MMLU-style questions that only look like code or words stay with the stronger fallback."""
    general = ["Which of the following is a function of the liver?", "What is the capital of Australia?",
               "Which data structure is first in, first out?"]
    topic = make_router(embedder, tmp_path).route(general)
    shipped = make_router(embedder, tmp_path, competence=True).route(general)
    fallback = load_catalog().for_role("fallback").name
    assert [r.expert for r in shipped] == [fallback] * len(general)
    moved = [t for t, s in zip(topic, shipped) if t.expert != s.expert]
    assert all(s.reason == "competence" for t, s in zip(topic, shipped) if t.expert != s.expert)
    assert all(t.scores[t.expert] - t.scores[fallback] < load_catalog().get(t.expert).route_margin for t in moved)
    # writing code, its own kind of question, still goes to the coder
    assert make_router(embedder, tmp_path, competence=True).route(["Write a Python function that reverses a string."])[0].expert == "qwen2.5-coder-0.5b"
