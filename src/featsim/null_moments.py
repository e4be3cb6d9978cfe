"""Exact mean and variance of a metric's shuffled-pairing null, without drawing a permutation.

Under the null the pairing is a uniformly random permutation pi of Y's rows. Four metrics are, up to
constants fixed by the data, a quadratic-assignment (Mantel / QAP) statistic
    Gamma(pi) = sum_{i != j} A_ij B_{pi(i) pi(j)}        (A, B: n x n, zero diagonal)
plus a linear-assignment term Lambda(pi) = sum_i u_i v_{pi(i)}:
- cka: ||Xc^T P Yc||_F^2 = tr(K P L P^T), K = Xc Xc^T: Lambda on diag(K), diag(L) + Gamma on the rest;
- cka_unbiased: unbiased HSIC = (Gamma(K~, L~) - 2/(n-2) Lambda(K~ 1, L~ 1) + const) / (n (n-3));
- rsa: sum_{i<j} Ra_ij Rb_{pi(i) pi(j)} = Gamma(Ra, Rb) / 2 on the fixed rank matrices (Mantel 1967);
- mutual_knn: shared neighbours = Gamma(Na, Nb) of the 0/1 directed k-NN adjacencies (not symmetric).
Their exact permutation mean and variance follow by counting index patterns (Mantel 1967; Hubert 1987,
"Assignment Methods in Combinatorial Data Analysis", ch. 4) and need only O(n) sums of each side
(`AssignmentSums`), never an n x n x ... tensor: O(n r^2) from CKA factors, O(n^2) from RSA's rank
matrices (which the RSA null holds anyway), O(n k) from neighbour lists.

No closed form: svcca, svcca_legacy and procrustes are sums (or means, or |.|) of singular values of
Qa^T P Qb, a non-polynomial function of the permutation: their moments over the n! re-pairings have no
finite expression in such sums. cka_unbiased's moments are those of the unclipped ratio (its kernel clips
to [-1, 1], which a null value reaches only when the unbiased HSIC exceeds its own norms).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

CLOSED_FORM_METRICS = ("cka", "cka_unbiased", "rsa", "mutual_knn")
NO_CLOSED_FORM = {
    "svcca": "mean of singular values of Qa^T P Qb: not a polynomial in the permutation",
    "svcca_legacy": "|Pearson r| of the first principal-component scores: E|r| over permutations has no closed form",
    "procrustes": "nuclear norm of Xn^T P Yn: not a polynomial in the permutation",
}


@dataclass(frozen=True)
class Moments:
    """Mean and variance of a statistic over the n! equally likely re-pairings."""

    mean: float
    variance: float

    @property
    def std(self) -> float:
        return math.sqrt(max(self.variance, 0.0))

    def affine(self, scale: float, shift: float = 0.0) -> "Moments":
        """Moments of scale * T + shift."""
        return Moments(scale * self.mean + shift, scale * scale * self.variance)


@dataclass(frozen=True)
class AssignmentSums:
    """What the permutation moments need of one side: the linear-term vector u and sums of the
    zero-diagonal matrix A of the quadratic term."""

    linear: np.ndarray  # [n] u of Lambda = sum_i u_i v_pi(i)
    row_sums: np.ndarray  # [n] sum_j A_ij
    column_sums: np.ndarray  # [n] sum_i A_ij
    square_sum: float  # sum_ij A_ij^2
    transpose_sum: float  # sum_ij A_ij A_ji (= square_sum for a symmetric A)

    @property
    def n(self) -> int:
        return int(self.row_sums.size)

    @property
    def total(self) -> float:
        return float(self.row_sums.sum())


def gram_sums(factors: np.ndarray) -> AssignmentSums:
    """Sums of K = F F^T (F [n, r] float64) split into diag(K) (linear term) and K off the diagonal,
    in O(n r^2) without forming K."""
    factors = np.asarray(factors, dtype=np.float64)
    diagonal = np.einsum("ij,ij->i", factors, factors)
    row_sums = factors @ factors.sum(axis=0) - diagonal
    square_sum = float(np.square(factors.T @ factors).sum() - diagonal @ diagonal)
    return AssignmentSums(diagonal, row_sums, row_sums, square_sum, square_sum)


def matrix_sums(matrix: np.ndarray, block_bytes: int = 32 * 2**20) -> AssignmentSums:
    """Sums of a dense symmetric zero-diagonal matrix (e.g. RSA's integer rank matrix), no linear term;
    O(n^2) time, read in float64 row blocks of about `block_bytes` (integer squares cannot overflow)."""
    n = matrix.shape[0]
    rows = np.empty(n)
    square_sum = 0.0
    step = max(1, block_bytes // (8 * max(n, 1)))
    for start in range(0, n, step):
        block = np.asarray(matrix[start:start + step], dtype=np.float64)
        rows[start:start + step] = block.sum(axis=1)
        square_sum += float(np.einsum("ij,ij->", block, block))
    return AssignmentSums(np.zeros(n), rows, rows, square_sum, square_sum)


def neighbour_sums(neighbours: np.ndarray) -> AssignmentSums:
    """Sums of the directed 0/1 k-NN adjacency (A_ij = 1 when j is one of i's k neighbours, never i)."""
    neighbours = np.asarray(neighbours, dtype=np.int64)
    n, k = neighbours.shape
    in_degree = np.bincount(neighbours.ravel(), minlength=n).astype(np.float64)
    sources = np.repeat(np.arange(n, dtype=np.int64), k)
    edges = sources * n + neighbours.ravel()
    mutual = int(np.isin(neighbours.ravel() * n + sources, edges).sum())  # edges i->j whose j->i exists
    return AssignmentSums(np.zeros(n), np.full(n, float(k)), in_degree, float(n * k), float(mutual))


def _falling(n: int, k: int) -> float:
    """n (n-1) ... (n-k+1)."""
    return float(math.prod(range(n - k + 1, n + 1)))


def _ratio(numerator: float, n: int, k: int) -> float:
    """numerator / n_(k), 0 where no k distinct indices exist (the count of such patterns is 0 too)."""
    return numerator / _falling(n, k) if n >= k else 0.0


def assignment_moments(a: AssignmentSums, b: AssignmentSums, linear_weight: float = 1.0,
                       quadratic_weight: float = 1.0) -> Moments:
    """Exact mean and variance of w_l Lambda + w_q Gamma over a uniform random permutation pi.

    Lambda = sum_i u_i v_pi(i), Gamma = sum_{i != j} A_ij B_pi(i)pi(j). E[Gamma^2] sums a_ij a_kl
    E[b_pi(i)pi(j) b_pi(k)pi(l)] over the patterns of (i, j, k, l): the same pair, the reversed pair, one
    shared index in each of four positions, four distinct indices; each expectation is a sum of B over
    the same pattern divided by n_(2), n_(3) or n_(4). Cov(Lambda, Gamma) likewise (index of u shared with
    i, with j, or with neither).
    """
    n = a.n
    if b.n != n:
        raise ValueError(f"both sides need the same number of pairs, got {a.n} and {b.n}")
    u_total, v_total = float(a.linear.sum()), float(b.linear.sum())
    linear_mean = u_total * v_total / n
    linear_var = (_centred_square(a.linear) * _centred_square(b.linear) / (n - 1)) if n > 1 else 0.0

    s_a, s_b = a.total, b.total
    quad_mean = _ratio(s_a * s_b, n, 2)
    rows_a, rows_b = float(a.row_sums @ a.row_sums), float(b.row_sums @ b.row_sums)
    cols_a, cols_b = float(a.column_sums @ a.column_sums), float(b.column_sums @ b.column_sums)
    rc_a, rc_b = float(a.row_sums @ a.column_sums), float(b.row_sums @ b.column_sums)
    second = (_ratio(a.square_sum * b.square_sum + a.transpose_sum * b.transpose_sum, n, 2)
              + _ratio((rows_a - a.square_sum) * (rows_b - b.square_sum)
                       + (cols_a - a.square_sum) * (cols_b - b.square_sum)
                       + 2.0 * (rc_a - a.transpose_sum) * (rc_b - b.transpose_sum), n, 3)
              + _ratio(_distinct_four(a, s_a, rows_a, cols_a, rc_a) * _distinct_four(b, s_b, rows_b, cols_b, rc_b),
                       n, 4))
    quad_var = second - quad_mean**2

    ur_a, uc_a = float(a.linear @ a.row_sums), float(a.linear @ a.column_sums)
    ur_b, uc_b = float(b.linear @ b.row_sums), float(b.linear @ b.column_sums)
    product = (_ratio(ur_a * ur_b + uc_a * uc_b, n, 2)
               + _ratio((u_total * s_a - ur_a - uc_a) * (v_total * s_b - ur_b - uc_b), n, 3))
    covariance = product - linear_mean * quad_mean

    mean = linear_weight * linear_mean + quadratic_weight * quad_mean
    variance = (linear_weight**2 * linear_var + quadratic_weight**2 * quad_var
                + 2.0 * linear_weight * quadratic_weight * covariance)
    return Moments(mean, max(variance, 0.0))


def _centred_square(values: np.ndarray) -> float:
    centred = values - values.mean()
    return float(centred @ centred)


def _distinct_four(sums: AssignmentSums, total: float, rows: float, cols: float, rc: float) -> float:
    """sum of a_ij a_kl over four distinct indices: the whole product minus the patterns sharing one."""
    return total * total - rows - cols - 2.0 * rc + sums.square_sum + sums.transpose_sum


# ---------------------------------------------------------------- per metric


def cka_moments(scores_a: np.ndarray, scores_b: np.ndarray, denominator: float) -> Moments:
    """Linear CKA = tr(K P L P^T) / denominator, from principal-component scores (K = scores scores^T)."""
    return assignment_moments(gram_sums(scores_a), gram_sums(scores_b)).affine(1.0 / denominator)


def cka_unbiased_moments(scores_a: np.ndarray, scores_b: np.ndarray, hsic_norm: float) -> Moments:
    """Unbiased-HSIC CKA (featsim.metrics.unbiased_hsic / hsic_norm) before its clip to [-1, 1]."""
    n = scores_a.shape[0]
    side_a, side_b = gram_sums(scores_a), gram_sums(scores_b)
    side_a, side_b = replace(side_a, linear=side_a.row_sums), replace(side_b, linear=side_b.row_sums)
    constant = side_a.total * side_b.total / ((n - 1) * (n - 2))
    hsic = assignment_moments(side_a, side_b, linear_weight=-2.0 / (n - 2))
    return hsic.affine(1.0 / (n * (n - 3) * hsic_norm), constant / (n * (n - 3) * hsic_norm))


def rsa_moments(ranks_a: np.ndarray, ranks_b: np.ndarray, norm: float) -> Moments:
    """RSA = sum_{i<j} Ra_ij Rb_pi(i)pi(j) / norm on the symmetric zero-diagonal rank matrices."""
    return assignment_moments(matrix_sums(ranks_a), matrix_sums(ranks_b)).affine(0.5 / norm)


def mutual_knn_moments(neighbours_a: np.ndarray, neighbours_b: np.ndarray) -> Moments:
    """Mean k-NN overlap = shared directed neighbour edges / (n k); mean k / (n - 1)."""
    n, k = neighbours_a.shape
    return assignment_moments(neighbour_sums(neighbours_a), neighbour_sums(neighbours_b)).affine(1.0 / (n * k))
