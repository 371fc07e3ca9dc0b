"""The router's word head: its numpy transform equals scikit-learn's TF-IDF, it learns which model
is right from words, and it survives the artifact's round trip."""

import numpy as np
import pytest

from optimizers.routing import fit_router
from optimizers.text_head import fit_text_head
from pipelines.routing import Router, hashed_words
from pipelines.text_head import TextHead

TEXTS = [
    "Solve: what is 12 + 7?", "Solve: what is 3 * 9?", "Solve: what is 40 - 2?", "Solve: what is 8 / 4?",
    "Translate to French: good morning", "Translate to French: thank you very much",
    "Translate to French: where is the station?", "Translate to French: the cat sleeps",
    "Écrire un poème sur l'été", "Écrire un poème sur la mer", "naïve café déjà-vu", "naïve café 2x déjà",
]
# model 0 (cheap) is right on arithmetic only; model 1 (dear) on everything
SCORE = np.array([[1.0 if t.startswith("Solve") else 0.0, 1.0] for t in TEXTS])


def test_numpy_transform_equals_scikit_learn_tfidf():
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    reference = vec.fit_transform(TEXTS + ["Solve solve solve: what is what is 1?"]).toarray()
    vocabulary = sorted(vec.vocabulary_, key=vec.vocabulary_.get)
    head = TextHead(vocabulary, vec.idf_, np.zeros((1, len(vocabulary))), [0.0])
    for i, text in enumerate(TEXTS + ["Solve solve solve: what is what is 1?"]):
        cols, weights = head.features(text)
        row = np.zeros(len(vocabulary))
        row[cols] = weights
        assert np.allclose(row, reference[i], atol=1e-12)


def test_word_head_learns_which_model_is_right_and_round_trips():
    head = fit_text_head(TEXTS, SCORE, np.ones_like(SCORE, bool))
    p = head.predict(["Solve: what is 5 + 5?", "Translate to French: good night"])
    assert p[0, 0] > p[1, 0] + 0.1  # the cheap model is predicted right on arithmetic, not on French
    assert np.allclose(TextHead.from_dict(head.to_dict()).predict(TEXTS), head.predict(TEXTS))


def test_word_head_is_skipped_when_no_two_inputs_share_a_word():
    assert fit_text_head(["alpha", "beta gamma"], np.array([[1.0], [0.0]]), np.ones((2, 1), bool)) is None


def test_router_with_word_head_needs_texts_and_round_trips():
    X = hashed_words(TEXTS)
    router = fit_router(X, SCORE, np.ones_like(SCORE, bool), ["cheap", "dear"], "hashed-words", TEXTS)
    assert router.text_head_ is not None
    with pytest.raises(ValueError, match="texts"):
        router.predict(X)
    loaded = Router.from_dict(router.to_dict())
    assert loaded.to_dict()["kind"] == "knn+ridge+words"
    assert np.allclose(loaded.predict_texts(TEXTS), router.predict(X, texts=TEXTS))


def test_stacking_weighs_the_head_that_predicts_out_of_fold():
    """Inputs whose words say which model is right but whose hashed vectors are noise: the out-of-fold
    Brier score gives the word head the larger share."""
    from optimizers.routing import fit_cross_fitted_router

    rng = np.random.default_rng(0)
    topics = ["invoice refund billing", "poem verse rhyme", "integral derivative calculus"]
    texts = [f"{topics[i % 3]} {' '.join(rng.choice(list('abcdefghij'), 3))}" for i in range(90)]
    score = np.array([[1.0 if i % 3 == 0 else 0.0, 1.0] for i in range(90)])
    X = rng.normal(size=(90, 16)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    folds = np.arange(90) % 5
    router, oof = fit_cross_fitted_router(X, score, np.ones_like(score, bool), ["cheap", "dear"], "x", folds, texts)
    assert router.word_weight_ >= 0.75
    assert oof.shape == score.shape
    right, wrong = oof[score[:, 0] == 1, 0].mean(), oof[score[:, 0] == 0, 0].mean()
    assert right > wrong + 0.3
    assert Router.from_dict(router.to_dict()).word_weight_ == router.word_weight_
