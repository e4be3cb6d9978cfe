"""featsim.correlate against a plain dense numpy Pearson correlation on small random sparse codes."""

from __future__ import annotations

import numba
import numpy as np
import pytest
import scipy.sparse as sp

from featsim.correlate import CorrelationConfig, max_correlation
import featsim.correlate as correlate
from featsim.correlation_result import ARRAY_FIELDS
from featsim.correlation_result import open_correlation, write_correlation
from featsim.errors import ConfigError
from featsim.stores import open_codes, open_store, write_codes
from featsim.targets.correlate import correlate_code_stores

TIE_DECIMALS = 12  # oracle values equal to this many decimals are ties (exact ties up to rounding)


def random_codes(rng, n_tokens, width, density, binary=False):
    """Non-negative sparse codes [n_tokens, width] float32 (values exactly representable)."""
    codes = sp.random(n_tokens, width, density=density, random_state=rng, format="csr", dtype=np.float64)
    codes.data = np.ones_like(codes.data) if binary else np.round(codes.data * 4 + 0.25, 3)
    return codes.astype(np.float32)


def oracle(codes_a, codes_b, min_active):
    """Dense population Pearson [d_a, d_b] over all rows, and which latents take part."""
    dense_a = np.asarray(codes_a.todense(), dtype=np.float64)
    dense_b = np.asarray(codes_b.todense(), dtype=np.float64)
    n = dense_a.shape[0]
    used_a = ((dense_a != 0).sum(0) >= min_active) & (dense_a.std(0) > 0)
    used_b = ((dense_b != 0).sum(0) >= min_active) & (dense_b.std(0) > 0)
    z_a = (dense_a - dense_a.mean(0)) / np.where(used_a, dense_a.std(0), 1.0)
    z_b = (dense_b - dense_b.mean(0)) / np.where(used_b, dense_b.std(0), 1.0)
    return z_a.T @ z_b / n, used_a, used_b


def oracle_topk(corr, used_rows, used_cols, k):
    """For each column of `corr` (restricted to used rows/cols): top-k rows by (value desc, row asc)."""
    n_rows, n_cols = corr.shape
    indices = np.full((n_cols, k), -1)
    values = np.full((n_cols, k), np.nan)
    rows = np.flatnonzero(used_rows)
    for col in np.flatnonzero(used_cols):
        column = corr[rows, col]
        order = np.lexsort((rows, -np.round(column, TIE_DECIMALS)))[:k]
        indices[col, :order.size] = rows[order]
        values[col, :order.size] = column[order]
    return indices, values


def assert_matches_oracle(result, codes_a, codes_b, min_active, top_k):
    corr, used_a, used_b = oracle(codes_a, codes_b, min_active)
    expected_a_for_b, expected_corr_for_b = oracle_topk(corr, used_a, used_b, top_k)
    expected_b_for_a, expected_corr_for_a = oracle_topk(corr.T, used_b, used_a, top_k)
    np.testing.assert_array_equal(result.used_a, used_a)
    np.testing.assert_array_equal(result.used_b, used_b)
    np.testing.assert_allclose(result.topk_corr_for_b, expected_corr_for_b, atol=1e-10, rtol=0)
    np.testing.assert_allclose(result.topk_corr_for_a, expected_corr_for_a, atol=1e-10, rtol=0)
    np.testing.assert_array_equal(result.topk_a_for_b, expected_a_for_b)
    np.testing.assert_array_equal(result.topk_b_for_a, expected_b_for_a)
    np.testing.assert_array_equal(result.best_a_for_b, expected_a_for_b[:, 0])
    np.testing.assert_array_equal(result.best_b_for_a, expected_b_for_a[:, 0])
    return corr


@pytest.fixture(scope="module")
def codes_pair():
    """Different widths, some dead and some rare latents."""
    rng = np.random.default_rng(0)
    codes_a = random_codes(rng, 500, 37, 0.08).tolil()
    codes_b = random_codes(rng, 500, 53, 0.06).tolil()
    codes_a[:, 3] = 0  # dead
    codes_b[:, 7] = 0
    codes_b[:, 11] = 0
    codes_b[[4, 90], 11] = 1.5  # rare: fires twice
    return codes_a.tocsr(), codes_b.tocsr()


def test_matches_brute_force_both_directions(codes_pair):
    codes_a, codes_b = codes_pair
    result = max_correlation(codes_a, codes_b, top_k=5, min_active=3, device="cpu")
    assert result.topk_a_for_b.shape == (53, 5) and result.topk_b_for_a.shape == (37, 5)
    assert_matches_oracle(result, codes_a, codes_b, min_active=3, top_k=5)
    dense_a = codes_a.toarray().astype(np.float64)
    np.testing.assert_array_equal(result.n_active_a, (dense_a != 0).sum(0))
    np.testing.assert_allclose(result.mean_a, dense_a.mean(0), rtol=1e-12)
    np.testing.assert_allclose(result.std_a, dense_a.std(0), rtol=1e-12)
    assert result.n_tokens == 500 and result.min_active == 3 and result.top_k == 5
    assert result.engine == "sparse-cpu"


def test_excluded_latents_are_counted_and_never_partners(codes_pair):
    codes_a, codes_b = codes_pair
    result = max_correlation(codes_a, codes_b, top_k=4, min_active=3, device="cpu")
    assert result.n_excluded_a == 1 and result.n_excluded_b == 2  # A3 dead; B7 dead, B11 fires twice
    assert result.summary()["n_dead_b"] == 1
    for latent in (7, 11):
        assert (result.topk_a_for_b[latent] == -1).all() and np.isnan(result.topk_corr_for_b[latent]).all()
        assert latent not in result.topk_b_for_a
    assert result.best_b_for_a[3] == -1 and 3 not in result.topk_a_for_b
    relaxed = max_correlation(codes_a, codes_b, top_k=4, min_active=2, device="cpu")
    assert relaxed.used_b[11] and relaxed.n_excluded_b == 1


def test_constant_latent_is_excluded():
    rng = np.random.default_rng(1)
    codes_a = random_codes(rng, 200, 6, 0.2).tolil()
    codes_a[:, 2] = 2.0  # fires on every token with one value: zero variance, correlation undefined
    codes_b = random_codes(rng, 200, 5, 0.2)
    result = max_correlation(codes_a.tocsr(), codes_b, top_k=2, min_active=1, device="cpu")
    assert not result.used_a[2] and result.n_excluded_a == 1 and 2 not in result.topk_a_for_b
    assert_matches_oracle(result, codes_a.tocsr(), codes_b, min_active=1, top_k=2)


def test_ties_go_to_the_lowest_index():
    rng = np.random.default_rng(2)
    codes_a = random_codes(rng, 400, 20, 0.1, binary=True).tolil()
    codes_b = random_codes(rng, 400, 12, 0.1, binary=True).tolil()
    codes_a[:, 9] = codes_a[:, 4]  # duplicate columns: identical correlations with every B latent
    codes_a[:, 15] = codes_a[:, 4]
    codes_b[:, 0] = codes_a[:, 4]  # B0's best partners are the three copies, in index order
    codes_b[:, 7] = codes_b[:, 3]
    codes_a, codes_b = codes_a.tocsr(), codes_b.tocsr()
    result = max_correlation(codes_a, codes_b, top_k=4, min_active=1, device="cpu")
    assert_matches_oracle(result, codes_a, codes_b, min_active=1, top_k=4)
    np.testing.assert_array_equal(result.topk_a_for_b[0, :3], [4, 9, 15])
    np.testing.assert_allclose(result.topk_corr_for_b[0, :3], 1.0, atol=1e-12)
    assert result.best_b_for_a[4] == result.best_b_for_a[9] == result.best_b_for_a[15] == 0
    for row in result.topk_b_for_a:  # B3 and B7 tie everywhere: B7 is listed only after B3
        if 7 in row:
            assert 3 in row and list(row).index(3) < list(row).index(7)


def test_never_cofiring_pairs_and_negative_best():
    """A and B fire on disjoint tokens: every correlation is -(mean_a/std_a)(mean_b/std_b) < 0."""
    rng = np.random.default_rng(3)
    codes_a = sp.vstack([random_codes(rng, 300, 10, 0.1), sp.csr_matrix((300, 10), dtype=np.float32)]).tocsr()
    codes_b = sp.vstack([sp.csr_matrix((300, 14), dtype=np.float32), random_codes(rng, 300, 14, 0.05)]).tocsr()
    result = max_correlation(codes_a, codes_b, top_k=3, min_active=1, device="cpu")
    corr = assert_matches_oracle(result, codes_a, codes_b, min_active=1, top_k=3)
    assert (result.best_corr_for_b < 0).all() and (result.best_corr_for_a < 0).all()
    ratio_a = result.mean_a / result.std_a
    ratio_b = result.mean_b / result.std_b
    np.testing.assert_allclose(corr, -np.outer(ratio_a, ratio_b), atol=1e-12)
    np.testing.assert_array_equal(result.best_a_for_b, np.full(14, np.argmin(ratio_a)))


def test_planted_permutation_is_recovered():
    rng = np.random.default_rng(4)
    codes_a = random_codes(rng, 3000, 64, 0.04)
    permutation = rng.permutation(64)  # B latent j copies A latent permutation[j]
    codes_b = codes_a[:, permutation].tocsr()
    codes_b.data *= rng.uniform(0.8, 1.2, codes_b.nnz).astype(np.float32)  # noisy magnitudes
    codes_b = (codes_b + random_codes(rng, 3000, 64, 0.01)).tocsr()  # plus unrelated firings
    result = max_correlation(codes_a, codes_b, top_k=3, min_active=5, device="cpu")
    np.testing.assert_array_equal(result.best_a_for_b, permutation)
    np.testing.assert_array_equal(result.best_b_for_a[permutation], np.arange(64))
    assert (result.best_corr_for_b > 0.8).all()


def test_large_offsets_keep_precision():
    """Latents active on most tokens with a large offset: the centred variance keeps full precision."""
    rng = np.random.default_rng(5)
    dense_a = (rng.random((400, 4)) < 0.9) * (1000 + rng.random((400, 4))).astype(np.float32)
    dense_b = (rng.random((400, 3)) < 0.9) * (500 + rng.random((400, 3))).astype(np.float32)
    dense_b[:, 0] = dense_a[:, 1]
    codes_a, codes_b = sp.csr_matrix(dense_a), sp.csr_matrix(dense_b)
    result = max_correlation(codes_a, codes_b, top_k=2, device="cpu")
    assert_matches_oracle(result, codes_a, codes_b, min_active=1, top_k=2)


def test_nearly_constant_latents_are_warned_about(caplog):
    rng = np.random.default_rng(8)
    dense_a = (1000 + 1e-3 * rng.random((300, 2))).astype(np.float32)  # always on, tiny spread: mean/std ~ 3e6
    dense_b = np.column_stack([1000 + 1e-3 * rng.random(300), rng.random(300) < 0.1]).astype(np.float32)
    with caplog.at_level("WARNING", logger="featsim.correlate"):
        max_correlation(sp.csr_matrix(dense_a), sp.csr_matrix(dense_b), top_k=1, device="cpu")
    assert "nearly constant" in caplog.text


@pytest.mark.parametrize("device", ["cpu", "auto"])  # the sparse kernel, and auto's numpy subset engine
def test_latent_subsets_keep_original_numbering(codes_pair, device):
    codes_a, codes_b = codes_pair
    subset_a, subset_b = np.array([30, 1, 3, 17, 22, 8]), np.array([50, 2, 11, 40, 7])
    result = max_correlation(codes_a, codes_b, top_k=3, min_active=3, device=device,
                             latents_a=subset_a, latents_b=subset_b)
    assert result.engine == ("sparse-cpu" if device == "cpu" else "subset-numpy")
    corr, used_a, used_b = oracle(codes_a, codes_b, min_active=3)
    in_a = np.isin(np.arange(37), subset_a)
    in_b = np.isin(np.arange(53), subset_b)
    expected_a_for_b, expected_corr_for_b = oracle_topk(corr, used_a & in_a, used_b & in_b, 3)
    expected_b_for_a, _ = oracle_topk(corr.T, used_b & in_b, used_a & in_a, 3)
    np.testing.assert_array_equal(result.topk_a_for_b, expected_a_for_b)
    np.testing.assert_array_equal(result.topk_b_for_a, expected_b_for_a)
    np.testing.assert_allclose(result.topk_corr_for_b, expected_corr_for_b, atol=1e-10)
    np.testing.assert_array_equal(result.subset_a, in_a)
    assert result.n_excluded_a == 1 and result.n_excluded_b == 2  # A3; B7, B11
    assert (result.best_a_for_b[~in_b] == -1).all()
    assert set(result.topk_a_for_b[result.topk_a_for_b >= 0]) <= set(subset_a)


def test_top_k_larger_than_the_partners_is_padded():
    rng = np.random.default_rng(6)
    codes_a, codes_b = random_codes(rng, 200, 3, 0.3), random_codes(rng, 200, 5, 0.3)
    result = max_correlation(codes_a, codes_b, top_k=4, device="cpu")
    assert_matches_oracle(result, codes_a, codes_b, min_active=1, top_k=4)
    assert (result.topk_a_for_b[:, 3] == -1).all() and np.isnan(result.topk_corr_for_b[:, 3]).all()


def test_result_does_not_depend_on_thread_count(codes_pair):
    codes_a, codes_b = codes_pair
    parallel = max_correlation(codes_a, codes_b, top_k=5, min_active=3, device="cpu")
    previous = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        serial = max_correlation(codes_a, codes_b, top_k=5, min_active=3, device="cpu")
    finally:
        numba.set_num_threads(previous)
    for name in ("topk_a_for_b", "topk_corr_for_b", "topk_b_for_a", "topk_corr_for_a"):
        np.testing.assert_array_equal(getattr(parallel, name), getattr(serial, name))


def test_dense_torch_path_equals_sparse_path(codes_pair, monkeypatch):
    """The GPU path's arithmetic on CPU tensors, in several latent blocks and token chunks."""
    codes_a, codes_b = codes_pair
    monkeypatch.setattr(correlate, "DENSE_TILE_BYTES", 8 * 37 * 64)  # 64-token chunks
    sparse = max_correlation(codes_a, codes_b, top_k=5, min_active=3, device="cpu")
    dense = max_correlation(codes_a, codes_b, top_k=5, min_active=3, device="dense-cpu", block_latents=16)
    assert dense.engine == "dense-cpu"
    for name in ("topk_corr_for_b", "topk_corr_for_a"):
        np.testing.assert_allclose(getattr(dense, name), getattr(sparse, name), atol=1e-6, rtol=0)
    np.testing.assert_array_equal(dense.topk_a_for_b, sparse.topk_a_for_b)
    np.testing.assert_array_equal(dense.topk_b_for_a, sparse.topk_b_for_a)
    assert_matches_oracle(dense, codes_a, codes_b, min_active=3, top_k=5)


def test_streaming_from_code_stores_equals_in_memory(codes_pair, tmp_path, monkeypatch):
    codes_a, codes_b = codes_pair
    write_codes(tmp_path / "a.zarr", codes_a, {"model": "A"})
    write_codes(tmp_path / "b.zarr", codes_b, {"model": "B"})
    monkeypatch.setattr(correlate, "STREAM_CHUNK_ROWS", 97)  # several chunks, one partial
    streamed = max_correlation(open_codes(tmp_path / "a.zarr"), open_codes(tmp_path / "b.zarr"),
                               top_k=4, min_active=3, device="cpu")
    in_memory = max_correlation(codes_a, codes_b, top_k=4, min_active=3, device="cpu")
    for name in ARRAY_FIELDS:
        np.testing.assert_array_equal(getattr(streamed, name), getattr(in_memory, name))


def test_duplicate_entries_are_summed():
    rng = np.random.default_rng(7)
    codes_a, codes_b = random_codes(rng, 150, 6, 0.3), random_codes(rng, 150, 4, 0.3)
    twice = np.repeat(np.arange(codes_a.nnz), 2)  # every entry stored twice, as two halves
    split = sp.csr_matrix((codes_a.data[twice] / 2, codes_a.indices[twice], codes_a.indptr * 2), shape=codes_a.shape)
    assert not split.has_canonical_format
    result = max_correlation(split, codes_b, top_k=2, device="cpu")
    assert_matches_oracle(result, codes_a, codes_b, min_active=1, top_k=2)


def test_write_and_open_roundtrip(codes_pair, tmp_path):
    codes_a, codes_b = codes_pair
    result = max_correlation(codes_a, codes_b, top_k=3, min_active=3, device="cpu")
    path = tmp_path / "corr" / "A0_B1.zarr"
    write_correlation(path, result, {"config_hash": "abc", "model_a": "A"})
    reopened = open_correlation(path)
    for name in ARRAY_FIELDS:
        np.testing.assert_array_equal(getattr(reopened, name), getattr(result, name))
    assert (reopened.n_tokens, reopened.min_active, reopened.top_k, reopened.engine) == (500, 3, 3, "sparse-cpu")
    attrs = open_store(path, kind="correlation").attrs
    assert attrs["model_a"] == "A" and attrs["n_excluded_b"] == 2 and attrs["complete"] is True


def test_correlate_code_stores_records_provenance(codes_pair, tmp_path):
    codes_a, codes_b = codes_pair
    write_codes(tmp_path / "a.zarr", codes_a, {"config_hash": "codes-a"})
    write_codes(tmp_path / "b.zarr", codes_b, {"config_hash": "codes-b"})
    slice_ = {"min_active": 3, "top_k": 2, "device": "cpu", "block_latents": 4096}
    correlate_code_stores(tmp_path / "a.zarr", tmp_path / "b.zarr", tmp_path / "c.zarr", slice_,
                                    {"model_a": "A", "model_b": "B", "layer_a": 0, "layer_b": 1})
    attrs = open_store(tmp_path / "c.zarr", kind="correlation").attrs
    from featsim.provenance import config_hash

    assert attrs["config_hash"] == config_hash({"correlation": slice_, "split": {}}) and attrs["n_tokens"] == 500
    assert (attrs["model_a"], attrs["layer_b"], attrs["codes_a_config_hash"]) == ("A", 1, "codes-a")
    assert open_correlation(tmp_path / "c.zarr").top_k == 2


def test_invalid_inputs_name_the_problem(codes_pair):
    codes_a, codes_b = codes_pair
    with pytest.raises(ValueError, match="token rows"):
        max_correlation(codes_a, codes_b[:100], device="cpu")
    with pytest.raises(ConfigError, match="correlation.top_k"):
        max_correlation(codes_a, codes_b, top_k=0, device="cpu")
    with pytest.raises(ConfigError, match="correlation.device"):
        max_correlation(codes_a, codes_b, device="tpu")
    with pytest.raises(ValueError, match="latents_a"):
        max_correlation(codes_a, codes_b, device="cpu", latents_a=[0, 37])
    with pytest.raises(ConfigError, match="correlation.blocks"):
        CorrelationConfig.from_config({"blocks": 3})
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            max_correlation(codes_a, codes_b, device="cuda")


def test_subset_engine_equals_the_sparse_kernel_on_code_stores_and_rows(codes_pair, tmp_path):
    codes_a, codes_b = codes_pair
    write_codes(tmp_path / "a.zarr", codes_a, {})
    write_codes(tmp_path / "b.zarr", codes_b, {})
    rows = np.random.default_rng(4).random(codes_a.shape[0]) > 0.25
    subsets = {"latents_a": np.arange(0, 37, 2), "latents_b": np.arange(1, 53, 3)}
    numpy_engine = max_correlation(open_codes(tmp_path / "a.zarr"), open_codes(tmp_path / "b.zarr"), top_k=4,
                                   min_active=2, rows=rows, **subsets)
    sparse_engine = max_correlation(codes_a, codes_b, top_k=4, min_active=2, device="cpu", rows=rows, **subsets)
    assert numpy_engine.engine == "subset-numpy" and sparse_engine.engine == "sparse-cpu"
    for name in ARRAY_FIELDS:
        np.testing.assert_allclose(getattr(numpy_engine, name), getattr(sparse_engine, name), rtol=0, atol=1e-12,
                                   err_msg=name)
    assert numpy_engine.n_tokens == sparse_engine.n_tokens == rows.sum()


def test_gpu_build_check_agrees_with_torch_without_importing_it():
    """`auto` reads torch's build (torch/version.py) without the ~2 s torch import; torch itself is the oracle."""
    import subprocess
    import sys

    script = ("import sys; from featsim.correlate import _torch_has_gpu_backend as gpu; found = gpu(); "
              "assert 'torch' not in sys.modules, 'imported torch'; import torch; "
              "print(found == bool(torch.version.cuda or torch.version.hip), found == gpu())")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["True", "True"]


@pytest.mark.parametrize("density", [0.02, 1.0])  # SAE-like codes (sparse kernel) and dense neurons (dense CPU)
def test_auto_engine_on_a_cpu_only_torch_is_the_full_cost_models_choice(density, monkeypatch):
    """Skipping the torch import changes no choice: the shortcut returns sparse-cpu only where the sparse
    kernel beats the dense CPU path on any thread count."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("the full cost model would weigh a GPU here")
    rng = np.random.default_rng(5)
    codes_a, codes_b = random_codes(rng, 2000, 1000, density), random_codes(rng, 2000, 900, density)
    side_a = correlate._load_side(codes_a, None, 1, np.dtype(np.float64), "latents_a", by_latent=False)
    side_b = correlate._load_side(codes_b, None, 1, np.dtype(np.float64), "latents_b", by_latent=True)
    monkeypatch.setattr(numba, "get_num_threads", lambda: 2)  # the sparse estimate scales with the kernel's threads
    monkeypatch.setattr(correlate, "_torch_has_gpu_backend", lambda: True)  # the full cost model, via torch
    full = correlate._choose_engine("auto", side_a, side_b)
    monkeypatch.setattr(correlate, "_torch_has_gpu_backend", lambda: False)
    assert correlate._choose_engine("auto", side_a, side_b) == full
    assert full[0] == ("sparse-cpu" if density < 1 else "dense-cpu")
