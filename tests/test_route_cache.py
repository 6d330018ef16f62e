"""The router's on-disk profile cache, and what loading the embedder leaves behind in the process."""

import json
import os

import numpy as np
import pytest

from complm_cli.compose.route import Embedder, VectorCache
from hubserver import hub  # noqa: F401  (hub is a fixture)


class FakeEmbedder:
    def __init__(self):
        self.calls = 0

    def encode(self, texts):
        self.calls += 1
        return np.asarray([[float(len(t)), 1.0, 0.0] for t in texts], dtype=np.float32)


@pytest.mark.parametrize("content", ["[]", "null", '"text"', '{"k": "not a vector"}', '{"a": [1, 2], "b": [1]}',
                                     '{"a": [1, true]}', "[" * 100_000])
def test_cache_of_the_wrong_shape_is_rebuilt(tmp_path, content):
    (tmp_path / "emb.json").write_text(content)
    cache = VectorCache(tmp_path, "emb")
    vectors = cache.vectors(["hello", "hi"], FakeEmbedder())
    assert vectors.shape == (2, 3) and vectors[0, 0] == 5.0
    rebuilt = json.loads((tmp_path / "emb.json").read_text())
    assert isinstance(rebuilt, dict) and len(rebuilt) == 2


def test_a_good_cache_is_used(tmp_path):
    embedder = FakeEmbedder()
    VectorCache(tmp_path, "emb").vectors(["hello"], embedder)
    again = FakeEmbedder()
    assert VectorCache(tmp_path, "emb").vectors(["hello"], again)[0, 0] == 5.0
    assert again.calls == 0


@pytest.mark.model
def test_loading_the_embedder_leaves_the_process_as_it_was(pulled_models, hub):
    """A program that imports complm keeps its environment, torch's thread count and its
    progress bars; the embedder asks the Hub for nothing."""
    import sentence_transformers  # noqa: F401  (what its import sets is not complm's doing)
    import torch
    from transformers.utils import logging as transformers_logging

    from complm_cli.cache.catalog import load_catalog

    environ = dict(os.environ)
    threads = torch.get_num_threads()
    bars = transformers_logging.is_progress_bar_enabled()
    cat = load_catalog()
    embedder = Embedder(pulled_models / "models" / cat.embedder.name / cat.embedder.file, cat.embedder.name, threads=1).start()
    vectors = embedder.encode(["What is a synonym for happy?", "Write a Python function."])
    assert vectors.shape == (2, 384)
    assert dict(os.environ) == environ
    assert torch.get_num_threads() == threads
    assert transformers_logging.is_progress_bar_enabled() == bars
    assert hub.traffic() == 0


@pytest.mark.model
def test_a_text_embedded_again_is_not_encoded_again(models, embedder):
    embedder._recent.clear()  # the embedder is shared by the session's tests
    calls = []
    model = embedder.model()
    real = model.encode

    def counting(texts, **kw):
        calls.append(list(texts))
        return real(texts, **kw)

    model.encode = counting
    try:
        first = embedder.encode(["What is the capital of France?", "Who wrote Hamlet?"])
        again = embedder.encode(["Who wrote Hamlet?", "What is 2 plus 2?", "Who wrote Hamlet?"])
    finally:
        del model.encode
    assert calls == [["What is the capital of France?", "Who wrote Hamlet?"], ["What is 2 plus 2?"]]
    assert np.array_equal(again[0], first[1]) and np.array_equal(again[2], first[1]) and again.shape == (3, 384)
