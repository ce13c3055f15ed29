"""Probes on synthetic embeddings with known answers, and attentive pooling's padding invariance."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aion_fast.downstream import (
    AttentivePooling,
    AttentiveProbe,
    LinearProbe,
    MLPProbe,
    accuracy,
    fit_probe,
    r2_score,
    train_test_split,
)

DIM = 48  # awkward width


def _embeddings(rows: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # correlated, offset, unequally scaled features, as real embeddings are
    mix = rng.standard_normal((DIM, DIM)) / np.sqrt(DIM)
    return (rng.standard_normal((rows, DIM)) @ mix * rng.uniform(0.1, 3.0, DIM) + 5.0).astype(np.float32)


def test_linear_probe_recovers_planted_signal_and_fails_on_noise():
    X = _embeddings(1501)
    rng = np.random.default_rng(1)
    y = X @ rng.standard_normal(DIM) + 0.001 * rng.standard_normal(len(X)) + 42.0
    train, test = train_test_split(len(X), 0.2, seed=0)
    X_before = X.copy()
    probe = fit_probe(LinearProbe(DIM, 1), X[train], y[train], lr=1e-2, epochs=300, patience=10)
    assert np.array_equal(X, X_before), "fit_probe modified the caller's features"
    assert r2_score(y[test], probe.predict(X[test])) >= 0.99
    assert r2_score(y[test], probe.predict(torch.from_numpy(X[test]))) >= 0.99  # torch in, numpy out

    noise = rng.standard_normal(len(X))
    probe = fit_probe(LinearProbe(DIM, 1), X[train], noise[train], lr=1e-2, epochs=300, patience=10)
    # a least-squares fit to pure noise scores about -D / N_train held out (here -0.04), never clearly above 0
    assert -0.15 < r2_score(noise[test], probe.predict(X[test])) < 0.05
    assert probe.history.stopped_early


def test_mlp_probe_classifies_with_string_labels_and_stratified_split():
    X = _embeddings(900, seed=2)
    centred = X - X.mean(axis=0)
    labels = np.where(centred[:, 0] > 0, "spiral", "elliptical")
    labels[np.abs(centred[:, 1]) > 2.5] = "merger"  # a rarer third class
    train, test = train_test_split(len(X), 0.25, labels=labels, seed=0)
    for cls in np.unique(labels):
        frac = np.mean(labels[test] == cls) / np.mean(labels == cls)
        assert 0.8 < frac < 1.25, f"class {cls} is not stratified"
    probe = fit_probe(MLPProbe(DIM, 3, hidden=64), X[train], labels[train], lr=3e-3, epochs=200, patience=15)
    predicted = probe.predict(X[test])
    assert predicted.dtype.kind == "U" and set(predicted) <= set(labels)
    majority = max(np.mean(labels[test] == cls) for cls in np.unique(labels))
    assert majority < 0.55 and accuracy(labels[test], predicted) > 0.75
    assert probe.predict_proba(X[test]).shape == (len(test), 3)


def test_fit_probe_rejects_bad_input():
    X = _embeddings(40)
    with pytest.raises(ValueError, match=r"\(N, D\) with D=48"):
        fit_probe(LinearProbe(DIM, 1), X[:, :10], np.zeros(40))
    with pytest.raises(ValueError, match="one target per object"):
        fit_probe(LinearProbe(DIM, 1), X, np.zeros(39))
    with pytest.raises(ValueError, match="out=2"):
        fit_probe(LinearProbe(DIM, 3), X, np.arange(40) % 2)
    with pytest.raises(ValueError, match="NaN"):
        bad = X.copy()
        bad[3, 1] = np.nan
        fit_probe(LinearProbe(DIM, 1), bad, np.zeros(40))
    with pytest.raises(ValueError, match="not fitted"):
        LinearProbe(DIM, 1).predict(X)


def test_attentive_pooling_ignores_padded_positions():
    pool = AttentivePooling(DIM, num_queries=2, num_heads=4)
    tokens = torch.randn(5, 17, DIM)
    padding = torch.zeros(5, 17, dtype=torch.bool)
    for row, length in enumerate([17, 1, 9, 16, 3]):  # variable lengths, one fully present row
        padding[row, length:] = True
    before = tokens.clone()
    out = pool(tokens, padding)
    assert torch.equal(tokens, before), "pooling modified the caller's tokens"
    assert out.shape == (5, 2, DIM)
    changed = tokens.masked_fill(padding[..., None], float("nan"))
    changed[1, 5] = 1e6
    torch.testing.assert_close(pool(changed, padding), out, rtol=0, atol=0)
    # the same object alone, without padding, gives the same vector (fp32 tolerance)
    torch.testing.assert_close(pool(tokens[2:3, :9]), out[2:3], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="no present token"):
        pool(tokens, torch.ones(5, 17, dtype=torch.bool))


def test_attentive_probe_learns_from_variable_length_tokens():
    gen = torch.Generator().manual_seed(0)
    rows, length = 400, 12
    tokens = torch.randn(rows, length, DIM, generator=gen)
    lengths = torch.randint(2, length + 1, (rows,), generator=gen)
    padding = torch.arange(length)[None, :] >= lengths[:, None]
    target = tokens.masked_fill(padding[..., None], 0).sum(1)[:, 0] / lengths  # mean of feature 0 over present
    tokens = tokens.masked_fill(padding[..., None], 7.0)  # junk in the padding must not help or hurt
    train, test = train_test_split(rows, 0.25, seed=0)
    probe = fit_probe(
        AttentiveProbe(DIM, 1, hidden=64),
        tokens[train],
        target[train].double().numpy(),
        padding=padding[train],
        lr=3e-3,
        epochs=60,
        patience=10,
    )
    r2 = r2_score(target[test].numpy(), probe.predict(tokens[test], padding[test]))
    assert r2 > 0.8
