"""Each metric against an independent textbook implementation, and every declared invariance."""

import math

import numpy as np
import pytest
import scipy.linalg
import scipy.spatial.distance
import scipy.stats
import torch

from featsim.metrics import INVARIANCES, METRICS, DegenerateInputError, describe


def related_pair(n=40, d_a=7, d_b=9, shared=4, noise=0.7, seed=0):
    """Paired rows sharing a `shared`-dim latent, plus noise and distinct column spectra."""
    rng = np.random.default_rng(seed)
    latent = rng.standard_normal((n, shared))
    X = latent @ rng.standard_normal((shared, d_a)) + noise * rng.standard_normal((n, d_a)) * np.linspace(1, 0.2, d_a)
    Y = latent @ rng.standard_normal((shared, d_b)) + noise * rng.standard_normal((n, d_b)) + 0.3
    return X, Y


def random_orthogonal(d, seed):
    return scipy.stats.ortho_group.rvs(d, random_state=seed)


# ---------------------------------------------------------------- oracles (plain textbook formulas)


def oracle_kept_components(X, threshold):
    """Smallest k with cumulative normalised covariance eigenvalues >= threshold."""
    Xc = X - X.mean(axis=0)
    eigenvalues = np.sort(np.linalg.eigvalsh(Xc.T @ Xc))[::-1]
    eigenvalues = eigenvalues[eigenvalues > eigenvalues[0] * 1e-12]
    fractions = np.cumsum(eigenvalues) / eigenvalues.sum()
    return int(np.argmax(fractions >= threshold - 1e-12)) + 1


def oracle_svcca(X, Y, threshold=0.99):
    """PCA-reduce each side, then CCA by covariance whitening: rho^2 = eig(Cxx^-1 Cxy Cyy^-1 Cyx)."""
    def reduce(Z, k):
        Zc = Z - Z.mean(axis=0)
        eigenvalues, vectors = np.linalg.eigh(Zc.T @ Zc)
        top = vectors[:, np.argsort(eigenvalues)[::-1][:k]]
        return Zc @ top

    k_a, k_b = oracle_kept_components(X, threshold), oracle_kept_components(Y, threshold)
    A, B = reduce(X, k_a), reduce(Y, k_b)
    Caa, Cbb, Cab = A.T @ A, B.T @ B, A.T @ B
    if k_a <= k_b:
        product = np.linalg.solve(Caa, Cab) @ np.linalg.solve(Cbb, Cab.T)
    else:
        product = np.linalg.solve(Cbb, Cab.T) @ np.linalg.solve(Caa, Cab)
    rho = np.sqrt(np.clip(np.sort(np.linalg.eigvals(product).real), 0, 1))
    return rho.mean(), k_a, k_b


def oracle_pc1_correlation(X, Y):
    def pc1_scores(Z):
        Zc = Z - Z.mean(axis=0)
        eigenvalues, vectors = np.linalg.eigh(np.cov(Zc, rowvar=False))
        return Zc @ vectors[:, np.argmax(eigenvalues)]

    return abs(np.corrcoef(pc1_scores(X), pc1_scores(Y))[0, 1])


def exact_cosine(a, b):
    """Cosine of two vectors from exactly rounded sums (math.fsum): identical inputs give identical
    values on every machine, unlike BLAS products whose rounding depends on kernel and alignment."""
    return math.fsum(a * b) / math.sqrt(math.fsum(a * a) * math.fsum(b * b))


def exact_pairwise(Z, centre):
    """[n, n] matrix of pairwise cosines (Pearson r when `centre`), each pair from `exact_cosine`."""
    if centre:
        Z = np.array([row - math.fsum(row) / row.size for row in Z])
    n = len(Z)
    return np.array([[exact_cosine(Z[i], Z[j]) if i != j else 1.0 for j in range(n)] for i in range(n)])


def oracle_rsa(X, Y):
    upper_a = scipy.spatial.distance.squareform(exact_pairwise(X, centre=True), checks=False)
    upper_b = scipy.spatial.distance.squareform(exact_pairwise(Y, centre=True), checks=False)
    return scipy.stats.spearmanr(upper_a, upper_b).statistic


def oracle_cka(X, Y):
    """HSIC with the centring matrix H on raw X, Y: tr(K H L H)."""
    n = X.shape[0]
    H = np.eye(n) - np.ones((n, n)) / n
    K, L = X @ X.T, Y @ Y.T

    def hsic(P, Q):
        return np.trace(P @ H @ Q @ H)

    return hsic(K, L) / np.sqrt(hsic(K, K) * hsic(L, L))


def oracle_cka_unbiased(X, Y):
    """Song et al. (2012) unbiased HSIC with explicit n x n kernels (diagonals zeroed)."""
    n = X.shape[0]

    def hsic(P, Q):
        P, Q = P - np.diag(np.diag(P)), Q - np.diag(np.diag(Q))
        one = np.ones(n)
        return (np.trace(P @ Q) + (one @ P @ one) * (one @ Q @ one) / ((n - 1) * (n - 2))
                - 2.0 / (n - 2) * (one @ P @ Q @ one)) / (n * (n - 3))

    Xc, Yc = X - X.mean(axis=0), Y - Y.mean(axis=0)
    K, L = Xc @ Xc.T, Yc @ Yc.T
    return hsic(K, L) / np.sqrt(hsic(K, K) * hsic(L, L))


def oracle_procrustes(X, Y):
    """scipy's orthogonal Procrustes on zero-padded, centred, unit-norm sides: tr((Xn R)^T Yn)."""
    width = max(X.shape[1], Y.shape[1])

    def normalise(Z):
        Zc = Z - Z.mean(axis=0)
        return np.pad(Zc / np.linalg.norm(Zc), ((0, 0), (0, width - Z.shape[1])))

    Xn, Yn = normalise(X), normalise(Y)
    R, _ = scipy.linalg.orthogonal_procrustes(Xn, Yn)
    return np.trace((Xn @ R).T @ Yn)


def oracle_mutual_knn(X, Y, k=10):
    def neighbours(Z):
        similarity = exact_pairwise(Z, centre=False)
        return [set(sorted((j for j in range(len(Z)) if j != i), key=lambda j: (-similarity[i, j], j))[:k])
                for i in range(len(Z))]

    return np.mean([len(a & b) / k for a, b in zip(neighbours(X), neighbours(Y))])


ORACLES = {
    "svcca": lambda X, Y: oracle_svcca(X, Y)[0],
    "svcca_legacy": oracle_pc1_correlation,
    "rsa": oracle_rsa,
    "cka": oracle_cka,
    "cka_unbiased": oracle_cka_unbiased,
    "procrustes": oracle_procrustes,
    "mutual_knn": oracle_mutual_knn,
}


def test_every_metric_has_an_oracle():
    assert set(ORACLES) == set(METRICS)


@pytest.mark.parametrize("name", sorted(METRICS))
@pytest.mark.parametrize("seed", [0, 1])
def test_metric_matches_textbook_oracle(name, seed):
    X, Y = related_pair(seed=seed)
    assert METRICS[name](X, Y) == pytest.approx(ORACLES[name](X, Y), rel=1e-8, abs=1e-10)


def test_svcca_reports_the_components_the_oracle_keeps():
    X, Y = related_pair(n=60, d_a=12, d_b=15)
    for threshold in (0.5, 0.9, 0.99, 1.0):
        expected, k_a, k_b = oracle_svcca(X, Y, threshold)
        details = describe("svcca", X, Y, threshold=threshold)
        assert (details["k_a"], details["k_b"]) == (k_a, k_b)
        assert details["score"] == pytest.approx(expected, rel=1e-8)


def test_svcca_keeps_at_most_the_planted_rank():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((50, 3)) @ rng.standard_normal((3, 20))  # rank 3 after centring
    Y = rng.standard_normal((50, 6))
    assert describe("svcca", X, Y, threshold=1.0)["k_a"] == 3


def test_svcca_legacy_is_abs_correlation_of_first_pc_scores():
    X, Y = related_pair(n=80, seed=5)
    details = describe("svcca_legacy", X, Y)
    assert details["score"] == pytest.approx(oracle_pc1_correlation(X, Y), rel=1e-10)
    assert (details["k_a"], details["k_b"], details["n_canonical"]) == (1, 1, 1)
    assert METRICS["svcca_legacy"](X, Y) == pytest.approx(METRICS["svcca"](X, Y, threshold=1e-9), rel=1e-12)


def test_rsa_averages_tied_ranks_like_spearmanr():
    rng = np.random.default_rng(7)
    base = rng.standard_normal((12, 6))
    X = base[[0, 1, 2, 3, 3, 3, 4, 5, 6, 6, 7, 8]]  # duplicated rows (many-to-1 pairs) tie at r = 1
    Y = rng.standard_normal((12, 5))
    assert METRICS["rsa"](X, Y) == pytest.approx(oracle_rsa(X, Y), rel=1e-10)


def many_to_one_rows(n_distinct=40, n_rows=300, d=24, seed=11):
    """Decoder rows as a many-to-1 pairing produces them: few distinct rows, each repeated, shuffled."""
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((n_distinct, d))
    return base[rng.integers(0, n_distinct, n_rows)]


def misaligned_copy(X, offset=1):
    """The same values at a different memory offset (BLAS/SIMD kernels may round differently there)."""
    buffer = np.empty(X.size + offset)
    view = buffer[offset:].reshape(X.shape)
    view[...] = X
    return view


def test_identical_rows_tie_exactly_whatever_position_or_alignment():
    from featsim.metrics import knn_indices, row_correlation_upper

    X = many_to_one_rows()
    _, group = np.unique(X, axis=0, return_inverse=True)
    group = group.reshape(-1)
    upper = row_correlation_upper(X)
    i, j = np.triu_indices(X.shape[0], k=1)
    key = np.minimum(group[i], group[j]) * 1000 + np.maximum(group[i], group[j])
    for value in np.unique(key):  # one correlation value per pair of distinct rows, bit for bit
        assert np.unique(upper[key == value]).size == 1
    assert (upper[group[i] == group[j]] == 1.0).all()
    np.testing.assert_array_equal(row_correlation_upper(misaligned_copy(X)), upper)
    np.testing.assert_array_equal(knn_indices(misaligned_copy(X), 5)[0], knn_indices(X, 5)[0])
    np.testing.assert_array_equal(knn_indices(X, 5, block_rows=7)[0], knn_indices(X, 5)[0])


def test_rsa_and_mutual_knn_with_many_to_one_rows_match_exact_oracles():
    X = many_to_one_rows(n_distinct=15, n_rows=45, d=8, seed=3)
    Y = np.random.default_rng(4).standard_normal((45, 6))
    assert METRICS["rsa"](X, Y) == pytest.approx(oracle_rsa(X, Y), rel=1e-10)
    assert METRICS["rsa"](misaligned_copy(X), Y) == METRICS["rsa"](X, Y)
    assert METRICS["mutual_knn"](X, Y, k=4) == pytest.approx(oracle_mutual_knn(X, Y, k=4), abs=1e-12)


def test_doubled_average_ranks_match_scipy_rankdata():
    from featsim.metrics import doubled_average_ranks

    rng = np.random.default_rng(3)
    for values in (rng.standard_normal(50), np.round(rng.standard_normal(200), 1), np.ones(7), np.array([2.0])):
        expected = 2.0 * scipy.stats.rankdata(values, method="average")
        np.testing.assert_array_equal(doubled_average_ranks(values), expected)


@pytest.mark.parametrize("block", [1, 3, 2048])
def test_blocked_rsa_ranks_match_rankdata_of_the_whole_triangle(block, monkeypatch):
    """The blocked rank code (tie groups crossing block borders, mirrored triangles) gives the ranks
    scipy.stats.rankdata gives on the whole upper triangle at once, and a symmetric rank matrix."""
    from featsim import metrics

    monkeypatch.setattr(metrics, "RANK_BLOCK", block)
    rng = np.random.default_rng(5)
    for values in (rng.standard_normal(3000), np.round(rng.standard_normal(5000)), np.zeros(4000), np.array([1.0])):
        expected = 2 * scipy.stats.rankdata(values, method="average") - (values.size + 1)
        np.testing.assert_array_equal(metrics.centred_doubled_ranks(values), expected)
    X = many_to_one_rows(n_distinct=20, n_rows=61, d=5, seed=6)
    ranks = metrics.rank_matrix(X)
    correlations = scipy.spatial.distance.squareform(1.0 - np.corrcoef(X), checks=False)
    n_upper = correlations.size
    expected = 2 * scipy.stats.rankdata(metrics.row_correlation_upper(X)) - (n_upper + 1)
    np.testing.assert_array_equal(ranks.upper, expected)
    np.testing.assert_allclose(metrics.row_correlation_upper(X), 1.0 - correlations, atol=1e-12)
    np.testing.assert_array_equal(ranks.matrix, ranks.matrix.T)
    np.testing.assert_array_equal(scipy.spatial.distance.squareform(ranks.matrix, checks=False), ranks.upper)
    assert ranks.norm == pytest.approx(np.sqrt(np.sum(ranks.upper.astype(float) ** 2)), rel=1e-15)


# ---------------------------------------------------------------- invariances


def transform(name, Z, seed):
    rng = np.random.default_rng(seed)
    n, d = Z.shape
    if name == "orthogonal":
        return Z @ random_orthogonal(d, seed)
    if name == "isotropic_scaling":
        return 3.7 * Z
    if name == "translation":
        return Z + rng.standard_normal(d)
    if name == "row_scaling":
        return Z * rng.uniform(0.2, 5.0, size=(n, 1))
    if name == "row_affine":
        return Z * rng.uniform(0.2, 5.0, size=(n, 1)) + rng.standard_normal((n, 1))
    raise KeyError(name)


def test_declared_invariances_are_known():
    for metric in METRICS.values():
        assert metric.invariances <= set(INVARIANCES), metric.name


@pytest.mark.parametrize("name", sorted(METRICS))
def test_declared_invariances_hold(name):
    X, Y = related_pair(n=45, seed=11)
    metric = METRICS[name]
    expected = metric(X, Y)
    for invariance in sorted(metric.invariances):
        if invariance == "joint_row_permutation":
            order = np.random.default_rng(2).permutation(len(X))
            assert metric(X[order], Y[order]) == pytest.approx(expected, rel=1e-9), invariance
            continue
        assert metric(transform(invariance, X, 1), Y) == pytest.approx(expected, rel=1e-9), (invariance, "a")
        assert metric(X, transform(invariance, Y, 2)) == pytest.approx(expected, rel=1e-9), (invariance, "b")


@pytest.mark.parametrize("name, transformation", [("rsa", "orthogonal"), ("mutual_knn", "translation"),
                                                  ("cka", "row_scaling"), ("svcca", "row_affine")])
def test_undeclared_transformations_change_the_score(name, transformation):
    """The invariance test above is not vacuous: a transformation outside the declaration moves the score."""
    X, Y = related_pair(n=45, seed=11)
    assert name and transformation not in METRICS[name].invariances
    assert abs(METRICS[name](transform(transformation, X, 1), Y) - METRICS[name](X, Y)) > 1e-4


@pytest.mark.parametrize("name", ["svcca", "cka", "cka_unbiased", "procrustes"])
def test_rotated_copy_scores_one(name):
    X, _ = related_pair(n=50, d_a=8)
    Q = random_orthogonal(8, 4)
    assert METRICS[name](X, X @ Q) == pytest.approx(1.0, abs=1e-9)
    embedding = np.linalg.qr(np.random.default_rng(0).standard_normal((12, 8)))[0].T  # [8, 12], orthonormal rows
    assert METRICS[name](X, X @ embedding) == pytest.approx(1.0, abs=1e-9)


def test_procrustes_is_below_one_for_a_non_rigid_map():
    X, _ = related_pair(n=50, d_a=8)
    stretched = X @ np.diag(np.linspace(0.2, 3.0, 8))
    assert METRICS["procrustes"](X, stretched) < 0.99


# ---------------------------------------------------------------- inputs and errors


def test_torch_inputs_are_accepted_and_computed_in_float64():
    X, Y = related_pair()
    for name, metric in METRICS.items():
        value = metric(torch.tensor(X, dtype=torch.float64), torch.tensor(Y, dtype=torch.float64))
        assert value == pytest.approx(metric(X, Y), rel=1e-12), name


@pytest.mark.parametrize("name", sorted(METRICS))
def test_too_few_pairs_is_a_degenerate_input(name):
    X, Y = related_pair()
    with pytest.raises(DegenerateInputError):
        METRICS[name](X[:2], Y[:2])


def test_side_without_variance_is_a_degenerate_input():
    X, Y = related_pair()
    constant = np.tile(Y[:1], (len(Y), 1))
    for name in ("svcca", "svcca_legacy", "cka", "cka_unbiased", "procrustes", "rsa"):
        with pytest.raises(DegenerateInputError):
            METRICS[name](X, constant)


def test_mutual_knn_needs_more_than_k_plus_one_pairs():
    X, Y = related_pair(n=11)
    with pytest.raises(DegenerateInputError, match="k=10"):
        METRICS["mutual_knn"](X, Y)
    assert METRICS["mutual_knn"](X, Y, k=3) == pytest.approx(oracle_mutual_knn(X, Y, k=3))


def test_option_errors_name_the_config_key():
    X, Y = related_pair()
    with pytest.raises(ValueError, match="metric_options.svcca"):
        METRICS["svcca"](X, Y, treshold=0.9)
    with pytest.raises(ValueError, match="metric_options.svcca.threshold"):
        METRICS["svcca"](X, Y, threshold=1.5)
    with pytest.raises(ValueError, match="metric_options.mutual_knn.k"):
        METRICS["mutual_knn"](X, Y, k=0)
    with pytest.raises(ValueError, match="one row per pair"):
        METRICS["cka"](X, Y[:-1])
