"""Similarity metrics between two paired sets of feature vectors (rows = paired latents).

`METRICS[name](X, Y) -> float` for X [n, d_a] and Y [n, d_b] whose row i is pair i (numpy or torch,
computed in float64). `describe(name, X, Y)` returns the score with its details (e.g. SVCCA's k_a,
k_b). Every entry declares the transformations it is invariant to (see INVARIANCES); the tests check
each declaration. The permutation null (featsim.null) reuses the building blocks below
(`principal_basis`, `centred_scores`, `rank_matrix`, `knn_indices`) so the fast null and the metric
are the same computation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np
import scipy.linalg

INVARIANCES = {
    "orthogonal": "X -> X Q for an orthogonal Q, on either side independently",
    "isotropic_scaling": "X -> c X for c > 0, on either side independently",
    "translation": "X -> X + 1 b^T (the same vector added to every row), on either side",
    "row_scaling": "x_i -> c_i x_i for c_i > 0 (each row rescaled on its own)",
    "row_affine": "x_i -> c_i x_i + t_i 1 for c_i > 0 (each row rescaled and shifted by a constant)",
    "joint_row_permutation": "the same reordering of the pairs on both sides",
}


class DegenerateInputError(ValueError):
    """The inputs admit no meaningful score (too few pairs, a side without variance, ...).

    `details`: what the decision rests on (e.g. SVCCA's k_a, k_b), recorded with a not-scored cell.
    """

    def __init__(self, message: str, details: Mapping[str, Any] | None = None):
        super().__init__(message)
        self.details = dict(details or {})


@dataclass(frozen=True)
class MetricResult:
    """A score and the details behind it (e.g. SVCCA's kept components)."""

    score: float
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Metric:
    """A registered metric: `metric(X, Y, **options) -> float`; `metric.describe(...)` adds details."""

    name: str
    compute: Callable[..., MetricResult]
    invariances: frozenset[str]
    description: str
    options: Mapping[str, Any] = field(default_factory=dict)  # option name -> default
    min_pairs: int = 3

    def resolve_options(self, options: Mapping[str, Any] | None) -> dict[str, Any]:
        """The defaults updated with `options`; an error naming the config key for unknown ones."""
        options = dict(options or {})
        unknown = set(options) - set(self.options)
        if unknown:
            raise ValueError(f"config key 'metric_options.{self.name}': unknown option(s) {sorted(unknown)}; "
                             f"{self.name} accepts {sorted(self.options) or 'none'}")
        return {**self.options, **options}

    def check_pairs(self, n_pairs: int) -> None:
        """DegenerateInputError when there are too few pairs for this metric."""
        if n_pairs < self.min_pairs:
            raise DegenerateInputError(f"{self.name} needs at least {self.min_pairs} pairs, got {n_pairs}")

    def describe(self, X, Y, **options) -> MetricResult:
        """Score and details on paired rows X [n, d_a], Y [n, d_b] (float64)."""
        options = self.resolve_options(options)
        X, Y = paired_arrays(X, Y)
        self.check_pairs(X.shape[0])
        return self.compute(X, Y, **options)

    def __call__(self, X, Y, **options) -> float:
        return self.describe(X, Y, **options).score


def as_float64(array) -> np.ndarray:
    """A 2-D float64 numpy copy-or-view of a numpy array or torch tensor."""
    if hasattr(array, "detach"):  # torch.Tensor, without importing torch here
        array = array.detach().cpu().double().numpy()
    array = np.asarray(array, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"expected a 2-D array [pairs, dims], got shape {array.shape}")
    return array


def paired_arrays(X, Y) -> tuple[np.ndarray, np.ndarray]:
    """Check and convert a pair of row-aligned matrices."""
    X, Y = as_float64(X), as_float64(Y)
    if X.shape[0] != Y.shape[0]:
        raise ValueError(f"X and Y must have one row per pair: got {X.shape[0]} and {Y.shape[0]} rows")
    if not (np.isfinite(X).all() and np.isfinite(Y).all()):
        raise ValueError("X and Y must be finite (NaN/inf found in a decoder row)")
    return X, Y


def centre_columns(X: np.ndarray) -> np.ndarray:
    """Subtract each column's mean over the rows."""
    return X - X.mean(axis=0, keepdims=True)


# ---------------------------------------------------------------- SVCCA / CCA / Procrustes blocks


@dataclass(frozen=True)
class PrincipalBasis:
    """Orthonormal basis of the top-k principal directions of centred data, as row scores."""

    basis: np.ndarray  # [n, k] left singular vectors (orthonormal columns, centred)
    singular_values: np.ndarray  # [rank] all singular values of the centred data
    k: int


def _numerical_rank(singular_values: np.ndarray, X: np.ndarray) -> int:
    """Singular values of centred X above rounding level, judged against the scale of X itself
    (so rows that are identical up to rounding count as no variance, not as rank 1)."""
    scale = max(float(singular_values[0]) if singular_values.size else 0.0, float(np.linalg.norm(X)))
    tolerance = scale * max(X.shape) * np.finfo(np.float64).eps
    return int(np.count_nonzero(singular_values > tolerance))


def principal_basis(X: np.ndarray, threshold: float | None = None, k: int | None = None) -> PrincipalBasis:
    """Centre columns, SVD, keep the smallest k whose normalised cumulative s^2 reaches `threshold`.

    Pass exactly one of `threshold` (in (0, 1]) or a fixed `k`. k never exceeds the numerical rank.
    """
    if (threshold is None) == (k is None):
        raise ValueError("pass exactly one of threshold or k")
    U, s, _ = np.linalg.svd(centre_columns(X), full_matrices=False)
    rank = _numerical_rank(s, X)
    if rank == 0:
        raise DegenerateInputError("a side has no variance across pairs (all rows identical)")
    if threshold is not None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"config key 'metric_options.svcca.threshold': must be in (0, 1], got {threshold}")
        energy = s[:rank] ** 2
        cumulative = np.cumsum(energy) / energy.sum()
        k = int(np.searchsorted(cumulative, threshold, side="left")) + 1
    k = max(1, min(int(k), rank))
    return PrincipalBasis(basis=U[:, :k], singular_values=s[:rank], k=k)


def canonical_correlations(basis_a: np.ndarray, basis_b: np.ndarray) -> np.ndarray:
    """Singular values of Qa^T Qb (cosines of the principal angles), clipped to [0, 1]."""
    return np.clip(scipy.linalg.svdvals(basis_a.T @ basis_b), 0.0, 1.0)


def svcca_result(side_a: PrincipalBasis, side_b: PrincipalBasis, threshold: float | None,
                 k: int | None = None) -> MetricResult:
    """Mean canonical correlation of two principal bases, with the kept components (and the
    threshold or fixed k that chose them)."""
    correlations = canonical_correlations(side_a.basis, side_b.basis)
    details = {"k_a": side_a.k, "k_b": side_b.k, "n_canonical": int(correlations.size)}
    if threshold is not None:
        details["threshold"] = threshold
    if k is not None:
        details["k"] = int(k)
    return MetricResult(float(correlations.mean()), details)


def svcca_bases(X: np.ndarray, Y: np.ndarray, threshold: float | None,
                k: int | None = None) -> tuple[PrincipalBasis, PrincipalBasis]:
    """Both sides' principal bases: a fixed `k` components when given (capped at each side's rank),
    else the components explaining `threshold` of the variance."""
    if k is None:
        return principal_basis(X, threshold=threshold), principal_basis(Y, threshold=threshold)
    if isinstance(k, bool) or not (isinstance(k, (int, np.integer)) and k >= 1):
        raise ValueError(f"config key 'metric_options.svcca.k': must be a positive integer or null, got {k!r}")
    return principal_basis(X, k=int(k)), principal_basis(Y, k=int(k))


def check_svcca_dimensions(k_a: int, k_b: int, n_pairs: int, metric: str = "svcca") -> None:
    """DegenerateInputError when k_a + k_b >= n - 1: centred data of n pairs span at most n - 1
    dimensions, so two kept subspaces that large (nearly) share directions and canonical correlations
    near 1 are forced whatever the pairing; the score and its null then measure nothing."""
    if k_a + k_b >= n_pairs - 1:
        shared = k_a + k_b - (n_pairs - 1)
        raise DegenerateInputError(
            f"{metric}: k_a + k_b = {k_a} + {k_b} >= n - 1 = {n_pairs - 1} ({n_pairs} pairs): the kept subspaces "
            f"fill the n - 1 dimensions the centred pairs span and share at least {shared} direction(s), so "
            "canonical correlations of 1 are forced whatever the pairing; set metric_options.svcca.k to a fixed "
            "k with 2k < n - 1, or score more pairs", {"k_a": int(k_a), "k_b": int(k_b)})


def _svcca(X: np.ndarray, Y: np.ndarray, threshold: float, k: int | None = None) -> MetricResult:
    side_a, side_b = svcca_bases(X, Y, threshold, k)
    return svcca_result(side_a, side_b, threshold if k is None else None, k)


def _svcca_legacy(X: np.ndarray, Y: np.ndarray) -> MetricResult:
    return svcca_result(principal_basis(X, k=1), principal_basis(Y, k=1), None)


def centred_scores(X: np.ndarray) -> np.ndarray:
    """Principal-component scores U S of the centred data [n, rank]: same Gram matrix as X centred.

    Xc^T P Yc and (U_a S_a)^T P (U_b S_b) have the same singular values for any row permutation P,
    so CKA and Procrustes (and their nulls) can work on these thinner factors.
    """
    U, s, _ = np.linalg.svd(centre_columns(X), full_matrices=False)
    rank = _numerical_rank(s, X)
    if rank == 0:
        raise DegenerateInputError("a side has no variance across pairs (all rows identical)")
    return U[:, :rank] * s[:rank]


def procrustes_norm(scores_a: np.ndarray, scores_b: np.ndarray) -> float:
    """||Xc||_F ||Yc||_F from principal-component scores; an error when a side has no variance."""
    norm = float(np.linalg.norm(scores_a) * np.linalg.norm(scores_b))
    if norm == 0.0:
        raise DegenerateInputError("procrustes: a side has no variance across pairs")
    return norm


def procrustes_result(scores_a: np.ndarray, scores_b: np.ndarray) -> MetricResult:
    """Nuclear norm of Xn^T Yn. Zero-padding the narrower side only adds zero rows/columns to
    Xn^T Yn, leaving its singular values unchanged, so no padding is materialised."""
    nuclear = scipy.linalg.svdvals(scores_a.T @ scores_b).sum() / procrustes_norm(scores_a, scores_b)
    return MetricResult(float(min(nuclear, 1.0)))


def _procrustes(X: np.ndarray, Y: np.ndarray) -> MetricResult:
    return procrustes_result(centred_scores(X), centred_scores(Y))


# ---------------------------------------------------------------- CKA


def cka_denominator(scores_a: np.ndarray, scores_b: np.ndarray) -> float:
    """||Xc^T Xc||_F ||Yc^T Yc||_F from principal-component scores (Xc^T Xc = V S^2 V^T)."""
    norm = float(np.linalg.norm(scores_a.T @ scores_a) * np.linalg.norm(scores_b.T @ scores_b))
    if norm == 0.0:
        raise DegenerateInputError("cka: a side has no variance across pairs")
    return norm


def cka_result(scores_a: np.ndarray, scores_b: np.ndarray) -> MetricResult:
    """Linear CKA; ||Xc^T Yc||_F = ||scores_a^T scores_b||_F because V_a, V_b are orthonormal."""
    cross = np.linalg.norm(scores_a.T @ scores_b) ** 2
    return MetricResult(float(cross / cka_denominator(scores_a, scores_b)))


def _cka(X: np.ndarray, Y: np.ndarray) -> MetricResult:
    return cka_result(centred_scores(X), centred_scores(Y))


def unbiased_hsic(cross_sq: float, sq_norms_a: np.ndarray, sq_norms_b: np.ndarray,
                  row_sums_a: np.ndarray, row_sums_b: np.ndarray) -> float:
    """Unbiased HSIC (Song et al. 2012) of linear kernels K = A A^T, L = B B^T, from feature-space terms.

    cross_sq = ||A^T B||_F^2, sq_norms = diag(K), diag(L), row_sums = K 1 - diag(K) (i.e. K~ 1).
    With K~ = K - diag(K): tr(K~ L~) = cross_sq - sum(diag K * diag L), 1^T K~ 1 = sum(K~ 1), ...
    """
    n = sq_norms_a.size
    trace_term = cross_sq - float(sq_norms_a @ sq_norms_b)
    sums_term = row_sums_a.sum() * row_sums_b.sum() / ((n - 1) * (n - 2))
    cross_sums_term = 2.0 / (n - 2) * float(row_sums_a @ row_sums_b)
    return (trace_term + sums_term - cross_sums_term) / (n * (n - 3))


def kernel_terms(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """diag(K) and (K - diag K) 1 for K = Xc Xc^T (= scores scores^T): the per-row unbiased-HSIC terms."""
    sq_norms = np.einsum("ij,ij->i", scores, scores)
    return sq_norms, scores @ scores.sum(axis=0) - sq_norms


def self_hsic(scores: np.ndarray) -> float:
    """Unbiased HSIC of a side with itself; an error when it is not positive (the CKA is then undefined)."""
    sq_norms, row_sums = kernel_terms(scores)
    hsic = unbiased_hsic(np.linalg.norm(scores.T @ scores) ** 2, sq_norms, sq_norms, row_sums, row_sums)
    if not hsic > 0.0:
        raise DegenerateInputError(f"cka_unbiased: the unbiased self-HSIC is not positive ({hsic:.3g}); "
                                   "too few pairs or a side without variance")
    return hsic


def cka_unbiased_result(scores_a: np.ndarray, scores_b: np.ndarray) -> MetricResult:
    """CKA with unbiased HSIC on centred data, clipped to [-1, 1] (estimator noise can leave it)."""
    (sq_a, rows_a), (sq_b, rows_b) = kernel_terms(scores_a), kernel_terms(scores_b)
    hsic_ab = unbiased_hsic(np.linalg.norm(scores_a.T @ scores_b) ** 2, sq_a, sq_b, rows_a, rows_b)
    return MetricResult(float(np.clip(hsic_ab / np.sqrt(self_hsic(scores_a) * self_hsic(scores_b)), -1.0, 1.0)))


def _cka_unbiased(X: np.ndarray, Y: np.ndarray) -> MetricResult:
    return cka_unbiased_result(centred_scores(X), centred_scores(Y))


# ---------------------------------------------------------------- RSA


def upper_triangle(matrix: np.ndarray) -> np.ndarray:
    """Entries i < j of a square matrix, row-major (as scipy's squareform), by row slices."""
    n = matrix.shape[0]
    return np.concatenate([matrix[i, i + 1:] for i in range(n - 1)]) if n > 1 else matrix[:0, 0]


def unit_rows(X: np.ndarray) -> np.ndarray:
    """Rows scaled to unit Euclidean norm; rows of zero norm stay zero."""
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return np.divide(X, norms, out=np.zeros_like(X), where=norms > 0)


def distinct_rows(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The bitwise-distinct rows of X and, per row of X, the index of its distinct row."""
    distinct, inverse = np.unique(X, axis=0, return_inverse=True)
    return distinct, inverse.reshape(-1)


def distinct_unit_rows(X: np.ndarray, centre: bool) -> tuple[np.ndarray, np.ndarray]:
    """Distinct unit rows of X (row-centred first when `centre`) and each row's index among them.

    Similarities are then products of distinct rows only, so identical rows (many-to-1 pairings repeat
    decoder rows) get bit-identical similarities whatever the BLAS kernel does with row positions or
    memory alignment: exact ties stay ties on every machine. Rows are deduplicated as given and again
    after normalising (rows equal up to scale and shift often normalise to the same bits).
    """
    raw, raw_index = distinct_rows(X)
    if centre:
        raw = raw - raw.mean(axis=1, keepdims=True)
    unit, unit_index = distinct_rows(unit_rows(raw))
    return unit, unit_index[raw_index]


def exact_unit_diagonal(similarity: np.ndarray, distinct: np.ndarray, start: int) -> np.ndarray:
    """Cosines clipped to [-1, 1], with exactly 1 for a unit row and itself (0 for a zero row).

    similarity [block, n_distinct] holds rows start.. of `distinct` against all distinct rows; pinning
    the self-similarity keeps every group of identical rows in one tie at the top on every machine.
    """
    np.clip(similarity, -1.0, 1.0, out=similarity)
    block = np.arange(similarity.shape[0])
    similarity[block, start + block] = distinct[start:start + block.size].any(axis=1)
    return similarity


RANK_BLOCK = 2048
"""Rows (and sorted entries, times 1024) handled at a time by the RSA rank code: it never builds n^2 index arrays."""


def _mirror_upper_triangle(matrix: np.ndarray) -> np.ndarray:
    """Copy a square matrix's upper triangle onto its lower one in place, block by block (exact copies)."""
    n = matrix.shape[0]
    for start in range(0, n, RANK_BLOCK):
        stop = min(start + RANK_BLOCK, n)
        block = matrix[start:stop, start:stop]
        lower = np.tril_indices(stop - start, k=-1)
        block[lower] = block.T[lower]
        matrix[stop:, start:stop] = matrix[start:stop, stop:].T
    return matrix


def _pair_correlations(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric Pearson-correlation matrix of X's distinct rows and each row's index among them.

    Identical rows give identical correlations (see `distinct_unit_rows`); the Gram matrix of the distinct
    rows is read from its upper triangle only, so r(i, j) and r(j, i) are one number.
    """
    distinct, inverse = distinct_unit_rows(X, centre=True)
    gram = _mirror_upper_triangle(exact_unit_diagonal(distinct @ distinct.T, distinct, 0))
    return gram, inverse


def _upper_entries(matrix: np.ndarray, inverse: np.ndarray) -> np.ndarray:
    """matrix[inverse[i], inverse[j]] for i < j, row-major (as scipy's squareform), row by row."""
    n = inverse.size
    out = np.empty(n * (n - 1) // 2, dtype=matrix.dtype)
    offset = 0
    for i in range(n - 1):
        out[offset:offset + n - 1 - i] = matrix[inverse[i]][inverse[i + 1:]]
        offset += n - 1 - i
    return out


def row_correlation_upper(X: np.ndarray) -> np.ndarray:
    """Pearson correlations between rows (row-centred cosine), upper triangle i < j, row-major.

    A row without variance has correlation 0 with every other row (Pearson is undefined there).
    Identical rows give identical correlations (see `_pair_correlations`).
    """
    if X.shape[0] < 2:
        return np.zeros(0)
    return _upper_entries(*_pair_correlations(X))


@dataclass(frozen=True)
class Ranks:
    """Centred doubled average ranks of the row correlations: 2 rank - (N + 1), exact integers.

    Doubled average ranks are integers, so this form and its row/column permutations are exact.
    """

    upper: np.ndarray  # [N] int32, N = n (n - 1) / 2, row-major i < j
    matrix: np.ndarray  # [n, n] int32, symmetric, zero diagonal
    norm: float  # sqrt(sum of upper^2)


def doubled_average_ranks(values: np.ndarray) -> np.ndarray:
    """2 x scipy.stats.rankdata(values, method="average") as exact int64 (a tie group at sorted
    positions s..e-1 has average rank (s + e + 1) / 2). Written here because importing scipy.stats
    costs ~0.6 s in every scoring job, for this one function."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], values.size]
    group = np.repeat(np.arange(starts.size), ends - starts)
    doubled = np.empty(values.size, dtype=np.int64)
    doubled[order] = (starts + ends + 1)[group]
    return doubled


def centred_doubled_ranks(values: np.ndarray) -> np.ndarray:
    """2 x average rank - (N + 1) of each value, as int32, in O(N) extra memory beyond one sort order.

    The same integers as `doubled_average_ranks(values) - (N + 1)`: a tie group at sorted positions
    s..e-1 gets s + e + 1 - (N + 1). Ties are exact float equality, so the order inside a tie group does
    not matter and an unstable (faster) sort gives the same ranks. Works on blocks of the sorted order;
    `values` may be deleted by the caller as soon as this returns. N must stay below 2^31.
    """
    size = values.size
    order = np.argsort(values)  # [N] int64
    block = RANK_BLOCK * 1024
    starts_group = np.empty(size, dtype=bool)  # sorted position p begins a tie group
    for lo in range(0, size, block):
        hi = min(lo + block, size)
        ordered = values[order[max(lo - 1, 0):hi]]
        if lo == 0:
            starts_group[0] = True
            starts_group[1:hi] = ordered[1:] != ordered[:-1]
        else:
            starts_group[lo:hi] = ordered[1:] != ordered[:-1]
    ranks = np.empty(size, dtype=np.int32)
    group_start = 0  # first sorted position of the tie group that holds position lo
    for lo in range(0, size, block):
        hi = min(lo + block, size)
        position = np.arange(lo, hi)
        first = np.maximum.accumulate(np.where(starts_group[lo:hi], position, group_start))
        following = np.flatnonzero(starts_group[hi:hi + block])
        after = hi + int(following[0]) if following.size else _next_group_start(starts_group, hi)
        ahead = np.append(np.where(starts_group[lo + 1:hi], position[1:], after), after)
        end = np.minimum.accumulate(ahead[::-1])[::-1]  # first sorted position of the next tie group
        ranks[order[lo:hi]] = (first + end + 1 - (size + 1)).astype(np.int32)
        group_start = int(first[-1])
    return ranks


def _next_group_start(starts_group: np.ndarray, position: int) -> int:
    """The first sorted position >= `position` that begins a tie group (the size when there is none)."""
    hit = np.flatnonzero(starts_group[position:])
    return position + int(hit[0]) if hit.size else starts_group.size


def rank_matrix(X: np.ndarray) -> Ranks:
    """Ranks of X's row-correlation upper triangle (ties: average rank), as vector and matrix.

    Memory: the distinct rows' correlation matrix (8 n_distinct^2 bytes) while the upper triangle is
    read from it, then the upper triangle (8 N bytes, N = n (n - 1) / 2) and its sort order (8 N), then
    int32 ranks (4 N) and the int32 matrix (4 n^2): about 1.2 GB at n = 10,000, never two n^2 float64
    arrays or n^2 index arrays. Exact: the same integers as ranking the whole triangle at once.
    """
    n = X.shape[0]
    n_upper = n * (n - 1) // 2
    if n_upper >= 2**31:
        raise ValueError(f"rsa supports at most 65,535 pairs (got {n}); use fewer pairs")
    if n < 2:
        upper = np.zeros(0, dtype=np.int32)
    else:
        correlations = _upper_entries(*_pair_correlations(X))
        upper = centred_doubled_ranks(correlations)
        del correlations
    matrix = np.zeros((n, n), dtype=np.int32)
    offset = 0
    for i in range(n - 1):
        matrix[i, i + 1:] = upper[offset:offset + n - 1 - i]
        offset += n - 1 - i
    _mirror_upper_triangle(matrix)
    as_float = upper.astype(np.float64)
    return Ranks(upper=upper, matrix=matrix, norm=float(np.sqrt(as_float @ as_float)))


def rank_norms(ranks_a: Ranks, ranks_b: Ranks) -> float:
    """|Ra| |Rb|; an error when a side's correlations are all equal (no ranking)."""
    norm = ranks_a.norm * ranks_b.norm
    if norm == 0.0:
        raise DegenerateInputError("rsa: all row correlations of a side are equal (no ranking)")
    return norm


def rsa_result(ranks_a: Ranks, ranks_b: Ranks) -> MetricResult:
    """Spearman = Pearson of the centred average ranks of the two upper triangles."""
    cross = ranks_a.upper.astype(np.float64) @ ranks_b.upper.astype(np.float64)
    return MetricResult(float(cross / rank_norms(ranks_a, ranks_b)), {"n_upper": int(ranks_a.upper.size)})


def _rsa(X: np.ndarray, Y: np.ndarray) -> MetricResult:
    return rsa_result(rank_matrix(X), rank_matrix(Y))


# ---------------------------------------------------------------- mutual kNN


def knn_indices(X: np.ndarray, k: int, block_rows: int = 1024) -> tuple[np.ndarray, bool]:
    """Indices [n, k] of each row's k most cosine-similar other rows; ties broken by lower index.

    Also returns whether any row has a tie at its k-th neighbour (its set then depends on row order).
    Rows of zero norm have cosine 0 with every row. Similarities are products of distinct rows only
    (`distinct_unit_rows`), so identical rows tie exactly on every machine. Blocked over distinct rows:
    memory O(block_rows x n).
    """
    n = X.shape[0]
    distinct, inverse = distinct_unit_rows(X, centre=False)
    rows_of = np.argsort(inverse, kind="stable")
    bounds = np.searchsorted(inverse[rows_of], np.arange(distinct.shape[0] + 1))
    neighbours = np.empty((n, k), dtype=np.int64)
    has_boundary_tie = False
    for start in range(0, distinct.shape[0], block_rows):
        stop = min(start + block_rows, distinct.shape[0])
        distinct_similarity = exact_unit_diagonal(distinct[start:stop] @ distinct.T, distinct, start)
        block_members = rows_of[bounds[start]:bounds[stop]]
        for first in range(0, block_members.size, block_rows):
            rows = block_members[first:first + block_rows]
            similarity = distinct_similarity[inverse[rows] - start][:, inverse]  # [rows, n]
            similarity[np.arange(rows.size), rows] = -np.inf
            kth_value = np.partition(similarity, n - k, axis=1)[:, n - k][:, None]
            above = similarity > kth_value
            at_kth = similarity == kth_value
            needed = k - above.sum(axis=1, keepdims=True)
            has_boundary_tie |= bool((at_kth.sum(axis=1, keepdims=True) > needed).any())
            chosen = above | (at_kth & (np.cumsum(at_kth, axis=1) <= needed))
            neighbours[rows] = np.nonzero(chosen)[1].reshape(rows.size, k)
    return neighbours, has_boundary_tie


def neighbour_overlap(neighbours_a: np.ndarray, neighbours_b: np.ndarray) -> float:
    """Mean over rows of |N_a(i) & N_b(i)| / k."""
    k = neighbours_a.shape[1]
    shared = (neighbours_a[:, :, None] == neighbours_b[:, None, :]).any(axis=2).sum(axis=1)
    return float(shared.mean() / k)


def check_knn_k(k, n: int) -> int:
    """Validate mutual_knn's k against the number of pairs."""
    if isinstance(k, bool) or not (isinstance(k, (int, np.integer)) and k >= 1):
        raise ValueError(f"config key 'metric_options.mutual_knn.k': must be a positive integer, got {k!r}")
    if n <= k + 1:
        raise DegenerateInputError(f"mutual_knn with k={k} needs more than k+1 = {k + 1} pairs, got {n} (each row's "
                                   "k neighbours would be all other rows, overlap 1 whatever the pairing); "
                                   "lower metric_options.mutual_knn.k below n - 1 to score it")
    return int(k)


def _mutual_knn(X: np.ndarray, Y: np.ndarray, k: int) -> MetricResult:
    k = check_knn_k(k, X.shape[0])
    neighbours_a, _ = knn_indices(X, k)
    neighbours_b, _ = knn_indices(Y, k)
    return MetricResult(neighbour_overlap(neighbours_a, neighbours_b), {"k": k})


# ---------------------------------------------------------------- registry

_ROTATION_FAMILY = frozenset({"orthogonal", "isotropic_scaling", "translation", "joint_row_permutation"})

METRICS: dict[str, Metric] = {
    metric.name: metric
    for metric in (
        Metric("svcca", _svcca, _ROTATION_FAMILY,
               "SVCCA: per side the top principal components explaining `threshold` of the variance "
               "(normalised cumulative s^2), or a fixed `k` of them when k is set; mean canonical "
               "correlation = mean singular value of Qa^T Qb.",
               options={"threshold": 0.99, "k": None}),
        Metric("svcca_legacy", _svcca_legacy, _ROTATION_FAMILY,
               "The original study's statistic (k = 1 on both sides): |Pearson r| of the first "
               "principal-component scores. For reproducing the study only."),
        Metric("rsa", _rsa, frozenset({"isotropic_scaling", "row_affine", "joint_row_permutation"}),
               "RSA: Spearman correlation (average ranks) of the upper triangles of the two n x n "
               "matrices of Pearson correlations between rows."),
        Metric("cka", _cka, _ROTATION_FAMILY,
               "Linear CKA on column-centred X, Y: ||Xc^T Yc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)."),
        Metric("cka_unbiased", _cka_unbiased, _ROTATION_FAMILY,
               "Linear CKA with the unbiased HSIC estimator (Song et al. 2012), clipped to [-1, 1].",
               min_pairs=4),
        Metric("procrustes", _procrustes, _ROTATION_FAMILY,
               "Orthogonal Procrustes similarity: nuclear norm of Xn^T Yn for column-centred, unit-"
               "Frobenius-norm sides (narrower side zero-padded); 1 = identical up to rotation."),
        Metric("mutual_knn", _mutual_knn,
               frozenset({"orthogonal", "isotropic_scaling", "row_scaling", "joint_row_permutation"}),
               "Mean overlap |N_X(i) & N_Y(i)| / k of each row's k cosine nearest neighbours "
               "(self excluded, ties by lower index) within each side.",
               options={"k": 10}),
    )
}

SVCCA_FAMILY = frozenset({"svcca", "svcca_legacy"})
"""Metrics subject to the CCA guards: not scored when k_a + k_b >= n - 1 (`check_svcca_dimensions`),
flagged when n pairs < 5 x kept components."""


def get_metric(name: str) -> Metric:
    """The registered metric `name`, or an error listing the registry."""
    try:
        return METRICS[name]
    except KeyError:
        raise ValueError(f"config key 'metrics': unknown metric {name!r}; choose from {sorted(METRICS)}") from None


def describe(name: str, X, Y, **options) -> dict:
    """JSON-ready score with details: {metric, score, invariances, **details} (e.g. k_a, k_b)."""
    metric = get_metric(name)
    result = metric.describe(X, Y, **options)
    return {"metric": name, "score": result.score, "invariances": sorted(metric.invariances), **result.details}
