"""The k-NN probe's search through faiss, on the GPU when faiss has GPU support there, otherwise on
the CPU, against NumPy's exact answer (pretrain/probe.py falls back to that without faiss)."""

from __future__ import annotations

import numpy as np
import pytest

from evcmae.pretrain import probe

faiss = pytest.importorskip("faiss", reason="faiss is not installed (the probe then searches with NumPy)")


def _gpu_count() -> int:
    return int(faiss.get_num_gpus()) if hasattr(faiss, "get_num_gpus") else 0


def _exact_neighbours(reference, queries, k):
    sims = queries @ reference.T
    return np.argsort(-sims, axis=1, kind="stable")[:, :k]


def test_faiss_search_matches_numpy(device, record_property):
    rng = np.random.default_rng(0)
    reference = probe._normalise(rng.standard_normal((2000, 128)))
    queries = probe._normalise(rng.standard_normal((300, 128)))
    k = 10
    index = faiss.IndexFlatIP(reference.shape[1])
    backend = "cpu"
    if device == "cuda" and _gpu_count() > 0:
        index = faiss.index_cpu_to_all_gpus(index)
        backend = "gpu"
    record_property("faiss_backend", backend)
    index.add(reference)
    sims, nearest = index.search(queries, k)
    want = _exact_neighbours(reference, queries, k)
    # Random unit vectors have no ties at float32 resolution: the same neighbours, in order.
    assert np.array_equal(nearest, want)
    np.testing.assert_allclose(sims, np.take_along_axis(queries @ reference.T, want, 1), rtol=1e-4, atol=1e-5)


def test_probe_accuracy_is_the_same_with_and_without_faiss(monkeypatch):
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, 400)
    centres = rng.standard_normal((4, 32))
    embeddings = centres[labels] + 0.8 * rng.standard_normal((400, 32))
    groups = np.arange(400) // 4
    with_faiss = probe.knn_accuracy(embeddings, labels, k=10, groups=groups)
    monkeypatch.setitem(__import__("sys").modules, "faiss", None)  # import faiss -> ImportError
    without = probe.knn_accuracy(embeddings, labels, k=10, groups=groups)
    assert with_faiss == without
    assert with_faiss > 0.5  # well-separated clusters: far above the 0.25 of guessing
