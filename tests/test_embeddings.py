"""The numpy MiniLM encoder against sentence-transformers' own output for the same weights, and its cache."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipelines import embeddings

pytestmark = pytest.mark.skipif(not embeddings.is_available(), reason=f"needs: {embeddings.INSTALL_HINT}")

REFERENCE = json.loads((Path(__file__).parent / "data" / "minilm_reference.json").read_text())


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TIERWISE_EMBEDDING_CACHE", str(tmp_path / "emb"))
    monkeypatch.setattr(embeddings, "_store", None)


def test_matches_sentence_transformers_reference():
    """Same weights, same tokenizer: vectors equal to float32 precision, including the 256-token truncation
    (the last reference sentence is 400 tokens long)."""
    got = embeddings.embed(REFERENCE["sentences"], cache=False)
    want = np.asarray(REFERENCE["vectors"], np.float32)
    assert got.shape == (4, embeddings.DIM)
    assert np.abs(got - want).max() < 1e-5
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_paraphrases_are_closer_than_other_topics():
    a, b, c = embeddings.embed(["How do I reset my password?", "I forgot my password and cannot log in",
                                "My parcel never arrived"], cache=False)
    assert a @ b > 0.7 > 0.3 > a @ c


def test_each_text_is_encoded_once_across_calls(monkeypatch):
    texts = ["where is my order", "refund please", "where is my order"]
    first = embeddings.embed(texts)
    assert np.array_equal(first[0], first[2])
    monkeypatch.setattr(embeddings, "encoder", lambda: pytest.fail("a cached text was encoded again"))
    again = embeddings.embed(list(reversed(texts)))
    assert np.array_equal(again, first[::-1])


def test_empty_and_odd_inputs():
    assert embeddings.embed([]).shape == (0, embeddings.DIM)
    out = embeddings.embed(["", None, "\x00\uffff" * 3, "9" * 5000], cache=False)
    assert np.isfinite(out).all() and out.shape == (4, embeddings.DIM)
