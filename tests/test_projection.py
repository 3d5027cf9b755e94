"""Kernel PCA: explained variance, planted structure, deterministic signs, out-of-sample projection."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.linalg import orthogonal_procrustes

from wkviz.errors import InputError
from wkviz.evaluation.projection import KernelPCA, center_kernel, cosine_normalize, mix_kernels, project, project_all


def planted(n=120, seed=0):
    """2-D points (an ellipse-shaped cloud) embedded linearly in 12-D, plus tiny noise."""
    rng = np.random.default_rng(seed)
    Z = rng.normal(size=(n, 2)) * np.array([3.0, 1.5])
    E = np.linalg.qr(rng.normal(size=(12, 2)))[0]
    X = Z @ E.T + 1e-3 * rng.normal(size=(n, 12))
    return Z, X


def test_explained_variance_is_a_fraction_and_sums_to_one():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(40, 6))
    K = np.exp(X @ X.T / 6)
    for cosine in (True, False):
        full = KernelPCA(n_components=40, cosine=cosine).fit(K)
        r = full.explained_variance_ratio_
        assert np.all(r >= 0) and np.all(np.diff(r) <= 1e-12)
        assert r.sum() == pytest.approx(1.0, abs=1e-9)
        top = KernelPCA(n_components=3, cosine=cosine).fit(K).explained_variance_ratio_
        np.testing.assert_allclose(top, r[:3], rtol=1e-9)
        assert top.sum() <= 1.0


def test_recovers_a_planted_two_dimensional_structure():
    Z, X = planted()
    pca = KernelPCA(n_components=3, cosine=False).fit(X @ X.T)
    assert pca.explained_variance_ratio_[:2].sum() > 0.999
    Zc = Z - Z.mean(0)
    R, _ = orthogonal_procrustes(pca.embedding_[:, :2], Zc)
    np.testing.assert_allclose(pca.embedding_[:, :2] @ R, Zc, atol=0.02)
    # the first axis is the long one
    assert abs(np.corrcoef(pca.embedding_[:, 0], Zc[:, 0])[0, 1]) > 0.99


def test_cosine_normalised_map_separates_planted_clusters():
    rng = np.random.default_rng(2)
    A = rng.normal(size=(30, 8)) * 0.2 + np.eye(8)[0] * 3
    B = rng.normal(size=(30, 8)) * 0.2 + np.eye(8)[1] * 3
    X = np.concatenate([A, B]) * rng.uniform(0.5, 4.0, size=(60, 1))  # sizes differ: cosine removes them
    proj = project(np.stack([X @ X.T]), nu=0)
    first = proj.coords[:, 0]
    assert (first[:30].max() < first[30:].min()) or (first[30:].max() < first[:30].min())
    assert proj.explained_variance_ratio[0] > 0.8


def test_signs_are_deterministic_and_transform_matches_embedding():
    Z, X = planted(n=50, seed=3)
    K = np.exp(X @ X.T / 20)
    a = KernelPCA(n_components=2).fit(K)
    perm = np.random.default_rng(4).permutation(50)
    b = KernelPCA(n_components=2).fit(K[np.ix_(perm, perm)])
    np.testing.assert_allclose(b.embedding_, a.embedding_[perm], atol=1e-9)
    for V in (a.embedding_,):
        idx = np.argmax(np.abs(V), axis=0)
        assert np.all(V[idx, [0, 1]] > 0)
    np.testing.assert_allclose(a.transform(K, diag=np.diag(K)), a.embedding_, atol=1e-9)
    with pytest.raises(InputError, match="self-kernels"):
        a.transform(K)


def test_stacks_environments_and_mixtures():
    rng = np.random.default_rng(5)
    feats = rng.normal(size=(25, 4))
    numbers = rng.choice([1, 6], size=25)
    same = (numbers[:, None] == numbers[None, :]).astype(float)
    G = same * (feats @ feats.T)
    Ka = np.stack([same, same * np.exp(G / 4), same * np.exp(G / 2)])
    Ka[1:, 0, :] = Ka[1:, :, 0] = 0.0  # an atom without neighbours: zero self-kernel at ν ≥ 1
    maps = project_all(Ka)
    assert set(maps) == {"nu=0", "nu=1", "nu=2", "mixed"}
    for p in maps.values():
        assert np.all(np.isfinite(p.coords)) and p.explained_variance_ratio.sum() <= 1.0 + 1e-12
    mixed = mix_kernels(Ka, weights=[0, 1, 1])
    d = np.diag(mixed)
    assert np.allclose(d[1:], 1.0) and d[0] == 0.0
    # a zero slice (like K_vector[0]) is skipped in the mixture
    Kz = np.concatenate([np.zeros((1, 25, 25)), Ka[1:]])
    np.testing.assert_allclose(mix_kernels(Kz, weights=[1, 1, 1]), mixed)
    with pytest.raises(InputError):
        project(Ka, nu=7)
    np.testing.assert_allclose(center_kernel(cosine_normalize(Ka[2])).sum(0), 0, atol=1e-10)
