"""Permutation null: fast kernels equal the plain loop, p-values are valid, multiple-testing adjustment."""

import itertools
import math

import numpy as np
import pytest
import scipy.linalg
import scipy.stats
import torch
from statsmodels.stats.multitest import multipletests

from featsim import _null_kernels as kernels
from featsim.metrics import METRICS, DegenerateInputError
from featsim.multiple_testing import adjust_pvalues
from featsim.null import NULL_TOLERANCE, permutation_batches, permutation_test, smallest_p
from featsim.null import _summary as null_summary


def related_pair(n=40, d_a=7, d_b=9, shared=3, noise=1.0, seed=0):
    rng = np.random.default_rng(seed)
    latent = rng.standard_normal((n, shared))
    X = latent @ rng.standard_normal((shared, d_a)) + noise * rng.standard_normal((n, d_a))
    Y = latent @ rng.standard_normal((shared, d_b)) + noise * rng.standard_normal((n, d_b))
    return X, Y


def naive_null(X, Y, name, n_permutations, seed, **options):
    """The definition: recompute the metric on Y with rows permuted by rng.permutation, in order."""
    rng = np.random.default_rng(seed)
    return np.array([METRICS[name](X, Y[rng.permutation(len(Y))], **options) for _ in range(n_permutations)])


@pytest.mark.parametrize("name", sorted(METRICS))
@pytest.mark.parametrize("d_a, d_b", [(7, 9), (9, 6)])  # the narrower side is the one gathered
def test_fast_null_equals_recomputing_the_metric(name, d_a, d_b):
    X, Y = related_pair(d_a=d_a, d_b=d_b)
    result = permutation_test(X, Y, name, 60, seed=3, precision="float64", method="fast", device="cpu")
    expected = naive_null(X, Y, name, 60, seed=3)
    np.testing.assert_allclose(result.null, expected, rtol=1e-9, atol=1e-12)
    assert result.observed == METRICS[name](X, Y)
    assert result.method == "fast"


@pytest.mark.parametrize("name", ["svcca", "svcca_legacy", "procrustes", "cka", "cka_unbiased", "rsa"])
def test_float32_null_is_within_the_documented_tolerance(name):
    X, Y = related_pair(n=120, d_a=20, d_b=24, seed=1)
    result = permutation_test(X, Y, name, 40, seed=5, precision="float32", method="fast", device="cpu")
    assert result.precision == "float32"
    error = np.abs(result.null - naive_null(X, Y, name, 40, seed=5)).max()
    assert error < NULL_TOLERANCE["float32"]  # measured ~1e-7 at this tiny size, <= 5e-8 at n >= 1000
    assert result.observed == METRICS[name](X, Y)  # the observed value stays float64


def test_fast_null_equals_loop_with_options_and_equal_widths():
    X, Y = related_pair(n=50, d_a=9, d_b=9, seed=2)
    fast = permutation_test(X, Y, "svcca", 30, seed=0, options={"threshold": 0.8}, precision="float64")
    loop = permutation_test(X, Y, "svcca", 30, seed=0, options={"threshold": 0.8}, method="loop")
    np.testing.assert_allclose(fast.null, loop.null, rtol=1e-9)
    assert fast.details["threshold"] == 0.8 and fast.details["k_a"] < 9
    knn = permutation_test(X, Y, "mutual_knn", 30, seed=0, options={"k": 4})
    np.testing.assert_allclose(knn.null, naive_null(X, Y, "mutual_knn", 30, 0, k=4), rtol=1e-12)


def test_rsa_kernel_is_exact_for_any_chunk_and_engine():
    from featsim import _rank_kernels

    X, Y = related_pair(n=30, seed=4)
    observed, kernel = kernels.prepare_rank(X, Y, kernels.NumpyBackend(), "float64", n_permutations=10**9)
    assert kernel.engine == "numba"
    perms = next(permutation_batches(30, 12, 0, 12))
    inverses = np.argsort(perms, axis=1).astype(np.int32)
    whole = _rank_kernels.rank_cross_terms(kernel.ranks_a, kernel.ranks_b, perms.astype(np.int32), inverses, 30)
    chunked = _rank_kernels.rank_cross_terms(kernel.ranks_a, kernel.ranks_b, perms.astype(np.int32), inverses, 1)
    np.testing.assert_array_equal(whole, chunked)
    brute = [sum(int(kernel.ranks_a[i, j]) * int(kernel.ranks_b[p[i], p[j]])
                 for i in range(30) for j in range(i + 1, 30)) for p in perms]
    np.testing.assert_array_equal(whole, np.array(brute, dtype=np.float64))
    assert observed.score == METRICS["rsa"](X, Y)
    _, small = kernels.prepare_rank(X, Y, kernels.NumpyBackend(), "float64", n_permutations=12)
    assert small.engine == "numpy"
    np.testing.assert_array_equal(small.scores(perms), kernel.scores(perms))  # both exact integer sums
    _, fast = kernels.prepare_rank(X, Y, kernels.NumpyBackend(), "float32", n_permutations=10**9)
    _, fast_small = kernels.prepare_rank(X, Y, kernels.NumpyBackend(), "float32", n_permutations=12)
    np.testing.assert_allclose(fast_small.scores(perms), fast.scores(perms), rtol=0, atol=1e-6)


def test_numpy_rsa_cross_terms_stay_exact_beyond_float64_integers():
    rng = np.random.default_rng(11)
    upper = np.triu(rng.integers(2**25, 2**26, (12, 12)), 1)
    ranks = (upper + upper.T).astype(np.int32)  # sums ~1e17 > 2^53: float64 would round, int64 does not
    kernel = kernels.RankCrossKernel(ranks, ranks[::-1, ::-1].copy(), 1.0, kernels.NumpyBackend(), engine="numpy")
    perms = next(permutation_batches(12, 6, 0, 6))
    brute = [sum(int(ranks[i, j]) * int(kernel.ranks_b[p[i], p[j]]) for i in range(12) for j in range(i + 1, 12))
             for p in perms]
    np.testing.assert_array_equal(kernel.scores(perms), np.array(brute, dtype=np.float64))


@pytest.mark.parametrize("name", ["svcca", "procrustes", "cka", "cka_unbiased", "rsa", "mutual_knn"])
@pytest.mark.parametrize("precision", ["float64", "float32"])
@pytest.mark.parametrize("d_a, d_b", [(7, 9), (9, 6)])
def test_torch_backend_equals_the_numpy_backend(name, precision, d_a, d_b):
    # the GPU path's arithmetic, run on CPU tensors: the same nulls as the CPU (numpy/numba) kernels
    X, Y = related_pair(n=50, d_a=d_a, d_b=d_b, seed=8)
    options = METRICS[name].resolve_options({"k": 4} if name == "mutual_knn" else {})
    perms = next(permutation_batches(50, 24, 0, 24))
    _, on_cpu = kernels.prepare(name, X, Y, options, kernels.NumpyBackend(), precision)
    _, on_torch = kernels.prepare(name, X, Y, options, kernels.TorchBackend("cpu"), precision)
    tolerance = 1e-12 if precision == "float64" else NULL_TOLERANCE["float32"]
    torch_scores = on_torch._scores_torch(perms) if name == "rsa" else on_torch.scores(perms)  # rsa: numpy on CPU
    np.testing.assert_allclose(torch_scores, on_cpu.scores(perms), rtol=0, atol=tolerance)
    assert isinstance(on_cpu.backend, kernels.NumpyBackend) and str(on_torch.backend.device) == "cpu"


def test_large_cpu_gemm_work_runs_on_torch_with_the_same_null(monkeypatch):
    X, Y = related_pair(n=60, d_a=8, d_b=10, seed=9)
    small = permutation_test(X, Y, "procrustes", 40, seed=2, precision="float64", device="cpu", threads=2)
    monkeypatch.setattr(kernels, "TORCH_CPU_MIN_WORK", 0.0)
    large = permutation_test(X, Y, "procrustes", 40, seed=2, precision="float64", device="cpu", threads=2)
    assert (small.backend, large.backend, large.device) == ("numpy", "torch", "cpu")
    np.testing.assert_allclose(large.null, small.null, rtol=0, atol=1e-12)
    assert large.to_dict()["null_backend"] == "torch"
    rsa = permutation_test(X, Y, "rsa", 10, seed=2, device="cpu")  # small: numpy, not numba or torch
    assert rsa.backend == "numpy"


def test_auto_device_picks_numpy_without_a_gpu_driver(monkeypatch):
    import featsim.null as null

    monkeypatch.setattr(null, "GPU_DEVICE_FILES", ("/nonexistent/nvidiactl",))
    assert isinstance(null.resolve_backend("auto"), kernels.NumpyBackend)
    assert isinstance(null.resolve_backend("cpu"), kernels.NumpyBackend)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="null.device.*no GPU"):
            null.resolve_backend("cuda")


def test_mutual_knn_with_tied_neighbours_falls_back_to_the_loop():
    X, Y = related_pair(n=30, seed=6)
    Y = Y[[0, 0, 1, 1] + list(range(2, 28))]  # duplicated rows tie at every neighbour rank
    result = permutation_test(X, Y, "mutual_knn", 20, seed=1, options={"k": 3})
    assert result.method == "loop"
    np.testing.assert_allclose(result.null, naive_null(X, Y, "mutual_knn", 20, 1, k=3))


def test_batches_do_not_change_the_permutation_stream():
    small = np.concatenate(list(permutation_batches(25, 30, 9, 7)))
    large = np.concatenate(list(permutation_batches(25, 30, 9, 100)))
    np.testing.assert_array_equal(small, large)
    rng = np.random.default_rng(9)
    np.testing.assert_array_equal(small[0], rng.permutation(25))


def test_seeded_and_reproducible():
    X, Y = related_pair()
    first = permutation_test(X, Y, "cka", 50, seed=11)
    again = permutation_test(X, Y, "cka", 50, seed=11)
    other = permutation_test(X, Y, "cka", 50, seed=12)
    np.testing.assert_array_equal(first.null, again.null)
    assert not np.array_equal(first.null, other.null)


def test_p_value_counts_ties_and_is_never_below_one_over_m_plus_one():
    X, _ = related_pair(n=30)
    identical = permutation_test(X, X, "cka", 99, seed=0)
    assert identical.observed == pytest.approx(1.0)
    assert identical.p_value == pytest.approx(1 / 100)
    X, Y = related_pair(seed=3)
    result = permutation_test(X, Y, "procrustes", 200, seed=2)
    exceed = np.count_nonzero(result.null >= result.observed - result.tolerance)
    assert result.p_value == (exceed + 1) / 201
    assert result.z == pytest.approx((result.observed - result.null.mean()) / result.null.std(ddof=1))
    assert (result.null_mean, result.null_std) == pytest.approx((result.null.mean(), result.null.std(ddof=1)))


@pytest.mark.parametrize("name, replicates", [("cka", 300), ("svcca", 200), ("rsa", 150)])
def test_p_values_are_uniform_for_independent_sides(name, replicates):
    rng = np.random.default_rng(123)
    p_values = []
    for replicate in range(replicates):
        X, Y = rng.standard_normal((16, 3)), rng.standard_normal((16, 4))
        p_values.append(permutation_test(X, Y, name, 49, seed=replicate, device="cpu").p_value)
    p_values = np.array(p_values)
    assert p_values.min() >= 1 / 50
    assert scipy.stats.kstest(p_values, "uniform").pvalue > 0.001
    assert abs(np.mean(p_values <= 0.1) - 0.1) < 4 * np.sqrt(0.1 * 0.9 / replicates)


@pytest.mark.parametrize("name", sorted(METRICS))
def test_planted_pairing_is_detected(name):
    # svcca_legacy only sees the first principal component: plant a single shared direction for it
    X, Y = related_pair(n=80, noise=0.3, shared=1 if name == "svcca_legacy" else 3)
    assert permutation_test(X, Y, name, 99, seed=0).p_value == pytest.approx(0.01)


def test_callable_metric_uses_the_plain_loop():
    X, Y = related_pair()

    def first_column_correlation(a, b):
        return abs(np.corrcoef(a[:, 0], b[:, 0])[0, 1])

    result = permutation_test(X, Y, first_column_correlation, 40, seed=4)
    rng = np.random.default_rng(4)
    expected = [first_column_correlation(X, Y[rng.permutation(len(Y))]) for _ in range(40)]
    np.testing.assert_allclose(result.null, expected)
    assert (result.method, result.metric) == ("loop", "first_column_correlation")
    with pytest.raises(ValueError, match="no fast null kernel"):
        permutation_test(X, Y, first_column_correlation, 5, method="fast")


def test_guard_flags_few_pairs_per_svcca_component():
    X, Y = related_pair(n=40, d_a=12, d_b=14)
    flagged = permutation_test(X, Y, "svcca", 10)
    assert flagged.details["k_a"] * 5 > 40 and "n_lt_5k" in flagged.flags
    X, Y = related_pair(n=200, d_a=6, d_b=8)
    assert "n_lt_5k" not in permutation_test(X, Y, "svcca", 10).flags
    assert "n_lt_5k" not in permutation_test(X, Y, "cka", 10).flags


def test_too_few_pairs_and_bad_arguments():
    X, Y = related_pair()
    with pytest.raises(DegenerateInputError):
        permutation_test(X[:2], Y[:2], "cka", 10)
    with pytest.raises(ValueError, match="null.permutations"):
        permutation_test(X, Y, "cka", 0)
    with pytest.raises(ValueError, match="null.device"):
        permutation_test(X, Y, "cka", 5, device="tpu")
    with pytest.raises(ValueError, match="null.precision"):
        permutation_test(X, Y, "cka", 5, precision="half")
    with pytest.raises(ValueError, match="config key 'metrics'"):
        permutation_test(X, Y, "cca", 5)


def test_torch_inputs_and_json_summary():
    X, Y = related_pair()
    result = permutation_test(torch.tensor(X), torch.tensor(Y, dtype=torch.float32), "svcca", 20, seed=1)
    summary = result.to_dict()
    assert summary["k_a"] == result.details["k_a"] and summary["n_permutations"] == 20
    assert "null" not in summary and summary["null_method"] == "fast"


# ---------------------------------------------------------------- honest cells: exact nulls, floors, degenerate nulls


@pytest.mark.parametrize("name", ["cka", "procrustes", "rsa", "svcca_legacy"])
@pytest.mark.parametrize("n", [4, 5])
def test_tiny_n_gives_the_exact_permutation_p_of_brute_force(name, n):
    X, Y = related_pair(n=n, d_a=3, d_b=4, shared=1, noise=0.3, seed=n)
    result = permutation_test(X, Y, name, 1000, seed=0, precision="float64", device="cpu")
    # brute force over all n! orderings of Y's rows (the identity is the observed pairing)
    every = np.array([METRICS[name](X, Y[list(order)]) for order in itertools.permutations(range(n))])
    assert result.exact and result.n_permutations == math.factorial(n) - 1 == result.null.size
    np.testing.assert_allclose(np.sort(result.null), np.sort(every[1:]), rtol=1e-9, atol=1e-12)
    assert result.p_value == pytest.approx(np.mean(every >= every[0] - 1e-9))
    assert result.p_min == pytest.approx(1 / math.factorial(n)) and result.p_value >= result.p_min
    assert result.to_dict()["null_exact"] is True


def test_exact_null_only_when_every_re_pairing_fits_in_m():
    batches = list(permutation_batches(4, 23, seed=9, batch_size=5))  # 4! - 1 = 23: exact, seed unused
    perms = np.concatenate(batches)
    assert perms.shape == (23, 4) and len({tuple(row) for row in perms}) == 23
    assert not (perms == np.arange(4)).all(axis=1).any()  # the observed pairing is never a null draw
    random = np.concatenate(list(permutation_batches(4, 22, seed=9, batch_size=5)))  # 22 < 23: sampled
    np.testing.assert_array_equal(random[0], np.random.default_rng(9).permutation(4))


def test_smallest_attainable_p_is_max_of_the_two_floors_without_overflow():
    assert smallest_p(3, 1000) == pytest.approx(1 / 6)
    assert smallest_p(4, 1000) == pytest.approx(1 / 24)
    assert smallest_p(7, 1000) == pytest.approx(1 / 1001)  # 7! = 5040 > 1001
    assert smallest_p(100_000, 10_000) == pytest.approx(1 / 10_001)  # n! far beyond any float


def test_constant_null_gives_no_z():
    X, Y = related_pair(n=30)
    # a statistic whose only variation across re-pairings is below float64 rounding tolerance (1e-9)
    def nearly_constant(A, B):
        return 0.5 + 1e-13 * float(B[0, 0])

    result = permutation_test(X, Y, nearly_constant, 50, seed=0)
    assert 0 < result.null_std < NULL_TOLERANCE["float64"]
    assert np.isnan(result.z) and "null_sd_below_tolerance" in result.flags
    assert result.p_value == 1.0  # every draw ties the observed value within tolerance
    assert result.to_dict()["z"] != result.to_dict()["z"]  # NaN: written as JSON null


def test_float32_rounding_spread_of_a_degenerate_svcca_null_gives_no_z():
    # 6 pairs in 8 dims, all variance kept: both sides span the whole 5-dim centred space, so every
    # re-pairing has mean canonical correlation exactly 1 (the concept cells: observed = null = 1)
    X, Y = related_pair(n=6, d_a=8, d_b=8, seed=4)
    options = {"threshold": 1.0, "k": None}
    observed, kernel = kernels.prepare("svcca", X, Y, options, kernels.NumpyBackend(), "float32")
    perms = np.stack([np.random.default_rng(i).permutation(6) for i in range(200)])
    null = kernel.scores(perms)
    assert observed.score == pytest.approx(1.0) and np.abs(null - 1.0).max() < NULL_TOLERANCE["float32"]
    p_value, z, null_mean, null_std = null_summary(observed.score, null, NULL_TOLERANCE["float32"])
    assert np.isnan(z) and null_std < NULL_TOLERANCE["float32"] and p_value == 1.0
    with pytest.raises(DegenerateInputError, match="k_a \\+ k_b") as error:  # the permutation test refuses it
        permutation_test(X, Y, "svcca", 200, seed=0, options=options, precision="float32", device="cpu")
    assert (error.value.details["k_a"], error.value.details["k_b"]) == (5, 5)


@pytest.mark.parametrize("n, scored", [(3, False), (4, True)])
def test_svcca_legacy_needs_two_components_below_n_minus_1(n, scored):
    X, Y = related_pair(n=n, d_a=3, d_b=3, seed=1)
    if scored:
        assert permutation_test(X, Y, "svcca_legacy", 30, seed=0).details["k_a"] == 1
    else:
        with pytest.raises(DegenerateInputError, match="n - 1 = 2"):
            permutation_test(X, Y, "svcca_legacy", 30, seed=0)


def test_svcca_fixed_k_scores_small_subspaces():
    X, Y = related_pair(n=12, d_a=10, d_b=10, seed=3)
    with pytest.raises(DegenerateInputError):
        permutation_test(X, Y, "svcca", 30, seed=0)  # 99% of the variance keeps ~10 components per side
    result = permutation_test(X, Y, "svcca", 30, seed=0, options={"k": 2}, precision="float64")
    assert (result.details["k_a"], result.details["k_b"], result.details["k"]) == (2, 2, 2)
    # oracle: mean cosine of the principal angles between the top-2 centred principal subspaces
    basis = lambda Z: np.linalg.svd(Z - Z.mean(axis=0), full_matrices=False)[0][:, :2]  # noqa: E731
    expected = np.cos(scipy.linalg.subspace_angles(basis(X), basis(Y))).mean()
    assert result.observed == pytest.approx(expected, abs=1e-12)
    np.testing.assert_allclose(result.null, naive_null(X, Y, "svcca", 30, 0, k=2), rtol=1e-9)
    with pytest.raises(ValueError, match="metric_options.svcca.k"):
        permutation_test(X, Y, "svcca", 30, options={"k": 0})


# ---------------------------------------------------------------- multiple testing


@pytest.mark.parametrize("method, oracle", [("holm", "holm"), ("bh", "fdr_bh")])
def test_adjusted_p_values_match_statsmodels(method, oracle):
    rng = np.random.default_rng(0)
    for size in (1, 2, 7, 30):
        p_values = np.round(rng.uniform(0, 0.3, size), 2)  # rounding creates ties
        np.testing.assert_allclose(adjust_pvalues(p_values, method), multipletests(p_values, method=oracle)[1])


def test_adjustment_skips_cells_that_were_not_scored():
    p_values = np.array([[0.01, np.nan], [0.04, 0.03]])
    adjusted = adjust_pvalues(p_values, "holm")
    assert adjusted.shape == (2, 2) and np.isnan(adjusted[0, 1])
    np.testing.assert_allclose(adjusted[~np.isnan(p_values)], multipletests([0.01, 0.04, 0.03], method="holm")[1])
    with pytest.raises(ValueError, match="correction"):
        adjust_pvalues(p_values, "bonferroni")
