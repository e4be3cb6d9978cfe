"""Exact null moments, moment-matched tail p-values and Besag-Clifford stopping, against independent oracles:
full enumeration, 100,000-permutation Monte Carlo in plain numpy, scipy.stats, and calibration under
independence."""

import itertools
import json

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from featsim import metrics as m
from featsim import null_moments as nm
from featsim.metrics import METRICS
from featsim.null import permutation_test
from featsim.null_tail import cantelli_p, pearson3_sf, skewness
from featsim.parquet import write_parquet
from featsim.scoring import score_pairs
from featsim.summary import SCORE_COLUMNS, TAIL_COLUMNS, summarize
from featsim.targets.scoring import score_cell

CLOSED = ["cka", "cka_unbiased", "rsa", "mutual_knn"]
KNN_K = 3


def sides(n, seed, d_a=3, d_b=4, shared=0.0):
    """Gaussian sides, skewed column scales (so the nulls are skewed), optionally a shared direction."""
    rng = np.random.default_rng(seed)
    latent = rng.standard_normal((n, 1))
    X = rng.standard_normal((n, d_a)) * np.linspace(3, 0.5, d_a) + shared * latent
    Y = rng.standard_normal((n, d_b)) * np.linspace(2, 0.5, d_b) + shared * latent
    return X, Y


def options(name):
    return {"k": KNN_K} if name == "mutual_knn" else {}


def exact_moments(name, X, Y):
    """The closed form under test, from the metric's own building blocks."""
    if name == "rsa":
        ranks_a, ranks_b = m.rank_matrix(X), m.rank_matrix(Y)
        return nm.rsa_moments(ranks_a.matrix, ranks_b.matrix, ranks_a.norm * ranks_b.norm)
    if name == "mutual_knn":
        return nm.mutual_knn_moments(m.knn_indices(X, KNN_K)[0], m.knn_indices(Y, KNN_K)[0])
    scores_a, scores_b = m.centred_scores(X), m.centred_scores(Y)
    if name == "cka":
        return nm.cka_moments(scores_a, scores_b, m.cka_denominator(scores_a, scores_b))
    return nm.cka_unbiased_moments(scores_a, scores_b, float(np.sqrt(m.self_hsic(scores_a) * m.self_hsic(scores_b))))


# ---------------------------------------------------------------- oracles: the metrics written out in numpy


def centred_gram(Z):
    Zc = Z - Z.mean(axis=0)
    return Zc @ Zc.T


def spearman_rank_matrix(Z):
    """scipy average ranks of the upper triangle of the row-correlation matrix, centred, as a symmetric matrix."""
    n = Z.shape[0]
    upper = np.triu_indices(n, 1)
    ranks = scipy.stats.rankdata(np.corrcoef(Z)[upper])
    matrix = np.zeros((n, n))
    matrix[upper] = ranks - ranks.mean()
    return matrix + matrix.T


def knn_adjacency(Z, k):
    unit = Z / np.linalg.norm(Z, axis=1, keepdims=True)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)
    adjacency = np.zeros_like(similarity)
    np.put_along_axis(adjacency, np.argsort(-similarity, axis=1, kind="stable")[:, :k], 1.0, axis=1)
    return adjacency


def oracle_null(name, X, Y, perms, chunk=4000):
    """The metric of (X, Y[p]) for each permutation p, from dense n x n matrices gathered as B[p][:, p]."""
    n = X.shape[0]
    if name in ("cka", "cka_unbiased"):
        A, B = centred_gram(X), centred_gram(Y)
    elif name == "rsa":
        A, B = spearman_rank_matrix(X), spearman_rank_matrix(Y)
    else:
        A, B = knn_adjacency(X, KNN_K), knn_adjacency(Y, KNN_K)
    values = []
    for start in range(0, len(perms), chunk):
        p = perms[start:start + chunk]
        permuted = B[p[:, :, None], p[:, None, :]]  # [chunk, n, n]
        if name == "cka":
            values.append(np.einsum("ij,bij->b", A, permuted) / (np.linalg.norm(A) * np.linalg.norm(B)))
        elif name == "rsa":
            values.append(np.einsum("ij,bij->b", A, permuted) / (np.linalg.norm(A) * np.linalg.norm(B)))
        elif name == "mutual_knn":
            values.append(np.einsum("ij,bij->b", A, permuted) / (n * KNN_K))
        else:  # unbiased HSIC (Song et al. 2012) on zero-diagonal Grams, normalised by the self terms
            def hsic(K, L):  # K [n, n], L [..., n, n]
                trace = np.einsum("ij,...ij->...", K, L)
                sums = K.sum() * L.sum(axis=(-2, -1)) / ((n - 1) * (n - 2))
                cross = np.einsum("i,...i->...", K.sum(axis=1), L.sum(axis=-1))
                return (trace + sums - 2.0 / (n - 2) * cross) / (n * (n - 3))

            K, L = A - np.diag(np.diag(A)), B - np.diag(np.diag(B))
            Lp = permuted - np.einsum("bii->bi", permuted)[:, :, None] * np.eye(n)
            values.append(hsic(K, Lp) / np.sqrt(hsic(K, K) * hsic(L, L)))
    return np.concatenate(values)


def random_permutations(n, count, seed):
    return np.argsort(np.random.default_rng(seed).random((count, n)), axis=1)


# ---------------------------------------------------------------- exact moments


@pytest.mark.parametrize("name", CLOSED)
def test_the_numpy_oracle_is_the_metric(name):
    X, Y = sides(9, seed=1, shared=0.5)
    perms = random_permutations(9, 25, seed=0)
    expected = [METRICS[name](X, Y[p], **options(name)) for p in perms]
    np.testing.assert_allclose(oracle_null(name, X, Y, perms), expected, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("name", CLOSED)
@pytest.mark.parametrize("n", [5, 6, 8])
def test_exact_moments_equal_the_moments_of_every_re_pairing(name, n):
    X, Y = sides(n, seed=n, shared=0.5)
    every = oracle_null(name, X, Y, np.array(list(itertools.permutations(range(n)))))
    moments = exact_moments(name, X, Y)
    assert moments.mean == pytest.approx(every.mean(), rel=1e-9, abs=1e-12)
    assert moments.variance == pytest.approx(every.var(), rel=1e-9, abs=1e-15)


@pytest.mark.parametrize("name", CLOSED)
@pytest.mark.parametrize("n", [12, 30])
def test_exact_moments_match_100k_permutations_within_monte_carlo_error(name, n):
    X, Y = sides(n, seed=100 + n)
    draws = oracle_null(name, X, Y, random_permutations(n, 100_000, seed=n))
    moments = exact_moments(name, X, Y)
    mean_error = draws.std() / np.sqrt(draws.size)
    var_error = np.sqrt((np.mean((draws - draws.mean()) ** 4) - draws.var() ** 2) / draws.size)
    assert abs(draws.mean() - moments.mean) < 4.5 * mean_error
    assert abs(draws.var() - moments.variance) < 4.5 * var_error


def test_closed_forms_of_simple_cases():
    # mean k-NN overlap is k / (n - 1); the unbiased HSIC and centred Spearman nulls have mean 0
    X, Y = sides(25, seed=1)
    assert exact_moments("mutual_knn", X, Y).mean == pytest.approx(KNN_K / 24)
    assert exact_moments("cka_unbiased", X, Y).mean == pytest.approx(0.0, abs=1e-12)
    assert exact_moments("rsa", X, Y).mean == pytest.approx(0.0, abs=1e-12)
    # a linear statistic alone: Var(sum u_i v_pi(i)) = S_uu S_vv / (n - 1)
    rng = np.random.default_rng(0)
    u, v = rng.standard_normal(9), rng.standard_normal(9)
    zero = nm.AssignmentSums(u, np.zeros(9), np.zeros(9), 0.0, 0.0)
    other = nm.AssignmentSums(v, np.zeros(9), np.zeros(9), 0.0, 0.0)
    moments = nm.assignment_moments(zero, other)
    assert moments.variance == pytest.approx(np.var(u) * 9 * np.var(v) * 9 / 8)
    assert moments.mean == pytest.approx(u.sum() * v.sum() / 9)


def test_fast_kernels_carry_the_exact_moments_and_json_reports_them():
    X, Y = sides(40, seed=2, shared=0.3)
    for name in CLOSED:
        result = permutation_test(X, Y, name, 50, seed=0, options=options(name), device="cpu")
        record = result.to_dict()
        expected = exact_moments(name, X, Y)
        assert record["null_mean_exact"] == pytest.approx(expected.mean, abs=1e-12)
        assert record["null_std_exact"] == pytest.approx(expected.std, rel=1e-9)
        assert record["z_exact"] == pytest.approx((result.observed - expected.mean) / expected.std)
        assert record["tail_method"] == "pearson3_exact_moments"
        json.dumps(record, allow_nan=False)
    for name in ("svcca", "procrustes", "svcca_legacy"):  # no closed form: moments from the draws only
        record = permutation_test(X, Y, name, 50, seed=0, device="cpu").to_dict()
        assert record["null_mean_exact"] is None and record["z_exact"] is None
        assert record["tail_method"] == "pearson3_sample_moments" and 0 < record["p_tail"] <= 1


# ---------------------------------------------------------------- tail p-values


@pytest.mark.parametrize("skew", [0.0, 1e-7, 0.4, 1.7, -0.3, -1.2])
def test_pearson3_tail_equals_scipy(skew):
    for x in (-2.0, 0.1, 1.5, 4.0, 9.0):
        expected = scipy.stats.pearson3(skew, loc=0.3, scale=1.7).sf(0.3 + 1.7 * x)
        assert pearson3_sf(0.3 + 1.7 * x, 0.3, 1.7, skew) == pytest.approx(expected, rel=1e-9, abs=1e-300)


def test_cantelli_bound_holds_on_an_exact_null():
    X, Y = sides(8, seed=3, shared=0.6)
    every = oracle_null("cka", X, Y, np.array(list(itertools.permutations(range(8)))))
    moments = exact_moments("cka", X, Y)
    for value in np.quantile(every, [0.5, 0.9, 0.99, 0.999]):
        assert np.mean(every >= value) <= cantelli_p(value, moments) + 1e-12


@pytest.mark.parametrize("name", ["cka", "rsa", "mutual_knn", "svcca"])
def test_tail_p_values_are_calibrated_under_independence(name):
    rng = np.random.default_rng(7)
    metric_options = {"k": 2} if name == "svcca" else options(name)
    p_tail = []
    for replicate in range(200):
        X, Y = rng.standard_normal((20, 3)), rng.standard_normal((20, 4))
        result = permutation_test(X, Y, name, 199, seed=replicate, options=metric_options, device="cpu", threads=1)
        p_tail.append(result.tail.p_tail)
    p_tail = np.array(p_tail)
    assert scipy.stats.kstest(p_tail, "uniform").pvalue > 0.001
    for level in (0.05, 0.1, 0.5):
        assert abs(np.mean(p_tail <= level) - level) < 4 * np.sqrt(level * (1 - level) / p_tail.size)


@pytest.mark.parametrize("name", ["cka", "rsa"])
def test_tail_p_is_calibrated_far_below_1_over_m_within_one_null(name):
    # conditional on one data set: over 200,000 re-pairings T, P(p_tail(T) <= a) should be about a, also for a far
    # below the 1/(m+1) = 1/1001 of a 1,000-draw null (the skewness comes from 1,000 draws, as in a cell)
    X, Y = sides(30, seed=11)
    draws = oracle_null(name, X, Y, random_permutations(30, 200_000, seed=1))
    result = permutation_test(X, Y, name, 1000, seed=2, device="cpu", precision="float64")
    moments, skew = result.exact_moments, result.tail.skew
    top = np.sort(draws)[-400:]  # p_tail falls with the value: every draw with p_tail <= 1e-3 is among these
    p_tail = np.array([pearson3_sf(value, moments.mean, moments.std, skew) for value in top])
    normal = scipy.stats.norm.sf(draws, moments.mean, moments.std)
    for level in (1e-3, 2e-4):
        assert np.count_nonzero(p_tail <= level) < top.size
        rate = np.count_nonzero(p_tail <= level) / draws.size
        assert 0.4 * level < rate < 1.6 * level
        assert np.mean(normal <= level) > 2.5 * level  # a normal tail (z alone) would be far off


# ---------------------------------------------------------------- Besag-Clifford sequential stopping


def test_sequential_p_is_h_over_draws_to_the_h_th_exceedance_of_the_fixed_stream():
    X, Y = sides(40, seed=4)
    fixed = permutation_test(X, Y, "cka", 500, seed=9, device="cpu")
    threshold = fixed.observed - fixed.tolerance
    for h in (1, 3, 10):
        sequential = permutation_test(X, Y, "cka", 500, seed=9, device="cpu", sequential_h=h)
        hits = np.flatnonzero(fixed.null >= threshold)
        assert hits.size >= h  # independent sides: the stream reaches h early
        draws = hits[h - 1] + 1
        assert sequential.n_permutations == draws and sequential.sequential_stopped
        np.testing.assert_array_equal(sequential.null, fixed.null[:draws])
        assert sequential.p_value == pytest.approx(h / draws)
        assert sequential.p_min == fixed.p_min and sequential.max_permutations == 500
    planted = sides(40, seed=4, shared=3.0)
    never = permutation_test(*planted, "cka", 300, seed=9, device="cpu", sequential_h=5)  # b = 0 < h: all m drawn
    assert (never.n_permutations, never.sequential_stopped, never.p_value) == (300, False, pytest.approx(1 / 301))
    assert permutation_test(X[:5], Y[:5], "cka", 500, seed=9, sequential_h=2).n_permutations == 119  # exact null


def test_sequential_p_values_are_valid_and_cheaper_under_independence():
    rng = np.random.default_rng(21)
    p_values, draws = [], []
    for replicate in range(300):
        X, Y = rng.standard_normal((16, 3)), rng.standard_normal((16, 4))
        result = permutation_test(X, Y, "cka", 999, seed=replicate, device="cpu", sequential_h=5, threads=1)
        p_values.append(result.p_value)
        draws.append(result.n_permutations)
    p_values = np.array(p_values)
    for level in (0.02, 0.05, 0.1, 0.25, 0.5):  # P(p <= u) <= u (Besag & Clifford 1991), within binomial error
        assert np.mean(p_values <= level) < level + 3 * np.sqrt(level * (1 - level) / p_values.size)
    assert np.mean(p_values <= 0.5) > 0.4  # ...and not trivially conservative
    assert np.median(draws) < 20 and p_values.min() >= 1 / 1000


def test_bad_sequential_h_names_the_config_key():
    X, Y = sides(20, seed=1)
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="null.sequential_h"):
            permutation_test(X, Y, "cka", 20, sequential_h=bad)


# ---------------------------------------------------------------- score json and summary


def test_score_json_and_summary_carry_the_tail_columns_after_the_old_ones(tmp_path):
    rng = np.random.default_rng(0)
    decoder_a, decoder_b = rng.standard_normal((64, 6)), rng.standard_normal((80, 7))
    decoder_b[:40, :6] += 2 * decoder_a[:40]  # latents 0..39 of A and B share their directions
    np.save(tmp_path / "a.npy", decoder_a)
    np.save(tmp_path / "b.npy", decoder_b)
    identity = {"experiment": "toy", "comparison": "main", "pairing": "one_to_one"}
    paths = []
    for layer, (pairs_a, pairs_b) in enumerate([(np.arange(40), np.arange(40)), (np.arange(40), np.arange(40, 80))]):
        pairs_file = tmp_path / f"A{layer}_B{layer}.parquet"
        write_parquet(pairs_file, pd.DataFrame({"a": pairs_a, "b": pairs_b}), {})
        for metric in ("cka", "svcca"):
            path = tmp_path / metric / f"A{layer}_B{layer}.json"
            score_cell(pairs_file, tmp_path / "a.npy", tmp_path / "b.npy", path, tmp_path / metric / f"A{layer}.npy",
                       metric=metric, null_config={"permutations": 99}, metric_options={},
                       ids={**identity, "layer_a": layer, "layer_b": layer})
            paths.append(path)
    record = json.loads(paths[0].read_text())
    assert record["sequential_h"] is None and record["max_permutations"] == record["n_permutations"] == 99
    assert record["p_value"] == pytest.approx(0.01) and record["p_tail"] < 1e-4 < record["p_value"]
    table = summarize(paths, [], "main", "one_to_one", "holm")
    assert list(table.columns[:len(SCORE_COLUMNS)]) == SCORE_COLUMNS
    assert list(table.columns[-len(TAIL_COLUMNS):]) == TAIL_COLUMNS
    cka = table[table["metric"] == "cka"].set_index("layer_a")
    # Holm over the 2 cells: the planted cell's p_tail doubled (the null cell's p_tail is the larger one)
    assert cka.loc[0, "p_tail_adjusted"] == pytest.approx(2 * cka.loc[0, "p_tail"])
    assert cka.loc[0, "significant_tail"] and not cka.loc[1, "significant_tail"]
    assert cka.loc[0, "tail_method"] == "pearson3_exact_moments"
    assert np.isnan(table[table["metric"] == "svcca"]["null_mean_exact"]).all()


def test_default_config_draws_every_permutation():
    rng = np.random.default_rng(1)
    decoder_a, decoder_b = rng.standard_normal((30, 5)), rng.standard_normal((30, 6))
    record = score_pairs(decoder_a, decoder_b, np.arange(30), np.arange(30), "rsa", 60, 4)
    assert record["n_permutations"] == 60 and record["sequential_h"] is None and not record["sequential_stopped"]


def test_skewness_about_exact_moments_is_unbiased_and_tighter_than_the_plain_estimate():
    # gamma draws with known mean, sd and skewness (scipy): mean(z^3 - 3z) is unbiased with ~6/m variance
    shape = 25.0  # skewness 0.4, as the nulls above
    truth = scipy.stats.gamma(shape)
    moments = nm.Moments(float(truth.mean()), float(truth.var()))
    samples = truth.rvs(size=(400, 1000), random_state=np.random.default_rng(3))
    with_moments = np.array([skewness(row, moments) for row in samples])
    plain = np.array([np.mean(((row - moments.mean) / moments.std) ** 3) for row in samples])
    assert abs(with_moments.mean() - float(truth.stats(moments="s"))) < 4 * with_moments.std() / np.sqrt(400)
    assert with_moments.std() < 0.8 * plain.std()
    assert skewness(samples[0]) == pytest.approx(scipy.stats.skew(samples[0]))
