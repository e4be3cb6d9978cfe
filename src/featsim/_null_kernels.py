"""Fast permutation-null kernels: the metric of (X, Y[p]) for batches of row permutations p.

Each kernel precomputes what a row permutation of Y does not change and returns, for a batch of
permutations [batch, n], the metric values [batch] (float64). `prepare` also returns the observed
value, computed in float64 by the metric's own functions (featsim.metrics) from the same SVDs,
ranks or neighbour lists the kernel is built from, so each side is decomposed once.

- SubspaceKernel (svcca, svcca_legacy, procrustes, cka, cka_unbiased): fixed factors Fa [n, ra],
  Fb [n, rb] (orthonormal SVCCA bases, or principal-component scores); per permutation only
  M = Fa^T Fb[p] changes. Torch on any device; float32 GEMM + eigenvalues of the small Gram (fast)
  or float64 GEMM + singular values (exact).
- RankCrossKernel (rsa): per permutation only the cross term sum_{i<j} Ra[i, j] Rb[p_i, p_j]
  changes: exact int64 products of int32 ranks (float64), or float32 products of scaled ranks
  (float32, ~2x faster); numba on CPU, torch on GPU.
- NeighbourKernel (mutual_knn): neighbour lists of both sides; Y[p]'s neighbours of row i are
  p^-1(N_Y(p_i)), exact as long as Y has no tie at a k-th neighbour.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numba
import numpy as np
import torch

from featsim import metrics as m

# ---------------------------------------------------------------- subspace / CKA kernels


@dataclass
class SubspaceKernel:
    """Null of metrics that are functions of the singular values of Fa^T P Fb (+ per-row terms).

    statistic: "mean_sv" (svcca: mean of min(ra, rb) singular values, each clipped to [0, 1]),
    "sum_sv" (procrustes: nuclear norm, clipped to <= 1), "cka" (||M||_F^2 / denominator),
    "cka_unbiased" (unbiased HSIC from ||M||_F^2 and the permuted per-row terms).
    """

    factors_a: torch.Tensor  # [n, ra]
    factors_b: torch.Tensor  # [n, rb]
    statistic: str
    precision: str  # "float32" | "float64"
    denominator: float = 1.0
    row_terms_a: tuple[np.ndarray, np.ndarray] | None = None  # cka_unbiased: diag(K), K~ 1
    row_terms_b: tuple[np.ndarray, np.ndarray] | None = None
    hsic_norm: float = 1.0  # cka_unbiased: sqrt(HSIC_aa HSIC_bb)
    _buffers: threading.local = field(default_factory=threading.local, repr=False, compare=False)

    @property
    def n_pairs(self) -> int:
        return int(self.factors_a.shape[0])

    @property
    def gathered_width(self) -> int:
        """Columns of the factor gathered per permutation (the narrower one)."""
        return int(min(self.factors_a.shape[1], self.factors_b.shape[1]))

    def scores(self, perms: np.ndarray) -> np.ndarray:
        """Metric values [batch] for permutations [batch, n] of Y's rows."""
        products = self._products(torch.as_tensor(perms, device=self.factors_b.device))  # [batch, ra, rb]
        if self.statistic in ("cka", "cka_unbiased"):
            cross_sq = products.double().square().sum(dim=(1, 2)).cpu().numpy()
            if self.statistic == "cka":
                return cross_sq / self.denominator
            return self._unbiased(cross_sq, perms)
        singular_values = self._singular_values(products)
        if self.statistic == "mean_sv":
            return singular_values.clamp(0.0, 1.0).mean(dim=1).cpu().numpy()
        return np.minimum(singular_values.sum(dim=1).cpu().numpy() / self.denominator, 1.0)

    def _products(self, perms: torch.Tensor) -> torch.Tensor:
        """Fa^T P Fb for each permutation. The narrower factor is gathered (Fa^T P Fb = (P^T Fa)^T Fb,
        P^T Fa = Fa[p^-1]) into a reused per-thread buffer: fresh allocations cost more than the copy."""
        batch, n = perms.shape
        gather_a = self.factors_a.shape[1] < self.factors_b.shape[1]
        moving = self.factors_a if gather_a else self.factors_b
        if gather_a:
            inverse = torch.empty_like(perms)
            inverse.scatter_(1, perms, torch.arange(n, device=perms.device).expand(batch, n))
            perms = inverse
        buffer = getattr(self._buffers, "gather", None)
        if buffer is None or buffer.shape[0] < batch * n:
            buffer = self._buffers.gather = torch.empty((batch * n, moving.shape[1]), dtype=moving.dtype,
                                                        device=moving.device)
        gathered = torch.index_select(moving, 0, perms.reshape(-1), out=buffer[: batch * n]).view(batch, n, -1)
        if gather_a:
            return torch.matmul(gathered.transpose(1, 2), self.factors_b)
        return torch.matmul(self.factors_a.T, gathered)

    def _singular_values(self, products: torch.Tensor) -> torch.Tensor:
        if self.precision == "float64":
            return torch.linalg.svdvals(products).double()
        # Eigenvalues of the smaller Gram matrix are the squared singular values: in float32 about
        # 3x cheaper than an SVD and within featsim.null.NULL_TOLERANCE of the float64 metric.
        if products.shape[1] <= products.shape[2]:
            gram = torch.matmul(products, products.transpose(1, 2))
        else:
            gram = torch.matmul(products.transpose(1, 2), products)
        return torch.linalg.eigvalsh(gram).double().clamp_min(0.0).sqrt()

    def _unbiased(self, cross_sq: np.ndarray, perms: np.ndarray) -> np.ndarray:
        sq_a, rows_a = self.row_terms_a
        sq_b, rows_b = self.row_terms_b
        values = np.array([m.unbiased_hsic(float(c), sq_a, sq_b[p], rows_a, rows_b[p])
                           for c, p in zip(cross_sq, perms)])
        return np.clip(values / self.hsic_norm, -1.0, 1.0)


def _tensor(array: np.ndarray, device: torch.device, precision: str) -> torch.Tensor:
    dtype = torch.float64 if precision == "float64" else torch.float32
    return torch.as_tensor(np.ascontiguousarray(array), dtype=dtype, device=device)


@dataclass(frozen=True)
class AutoPrecision:
    """precision="auto": float64 while a permutation costs at most this much, float32 beyond."""

    max_gemm_multiply_adds: int = 50_000_000  # n * ra * rb of the GEMM kernels (BLAS speed)
    max_gathered_pairs: int = 2_000_000  # n (n - 1) / 2 of the RSA kernel (gather-bound, ~20x slower per pair)


def _choose_precision(precision: str, cost: int, limit: int) -> str:
    if precision == "auto":
        return "float64" if cost <= limit else "float32"
    return precision


def prepare_subspace(name: str, X: np.ndarray, Y: np.ndarray, options: dict, device: torch.device,
                     precision: str, auto: AutoPrecision) -> tuple[m.MetricResult, SubspaceKernel]:
    """Observed value (float64, the metric's own code) and null kernel of a GEMM-structured metric,
    both from one SVD per side."""
    n = X.shape[0]
    if name in ("svcca", "svcca_legacy"):
        threshold = options.get("threshold") if name == "svcca" else None
        if threshold is not None:
            side_a, side_b = m.principal_basis(X, threshold=threshold), m.principal_basis(Y, threshold=threshold)
        else:
            side_a, side_b = m.principal_basis(X, k=1), m.principal_basis(Y, k=1)
        observed = m.svcca_result(side_a, side_b, threshold)
        chosen = _choose_precision(precision, n * side_a.k * side_b.k, auto.max_gemm_multiply_adds)
        return observed, SubspaceKernel(_tensor(side_a.basis, device, chosen), _tensor(side_b.basis, device, chosen),
                                        "mean_sv", chosen)
    scores_a, scores_b = m.centred_scores(X), m.centred_scores(Y)
    chosen = _choose_precision(precision, n * scores_a.shape[1] * scores_b.shape[1], auto.max_gemm_multiply_adds)
    factors_a, factors_b = _tensor(scores_a, device, chosen), _tensor(scores_b, device, chosen)
    if name == "procrustes":
        return (m.procrustes_result(scores_a, scores_b),
                SubspaceKernel(factors_a, factors_b, "sum_sv", chosen,
                               denominator=m.procrustes_norm(scores_a, scores_b)))
    if name == "cka":
        return (m.cka_result(scores_a, scores_b),
                SubspaceKernel(factors_a, factors_b, "cka", chosen, denominator=m.cka_denominator(scores_a, scores_b)))
    if name == "cka_unbiased":
        return (m.cka_unbiased_result(scores_a, scores_b),
                SubspaceKernel(factors_a, factors_b, "cka_unbiased", chosen,
                               row_terms_a=m.kernel_terms(scores_a), row_terms_b=m.kernel_terms(scores_b),
                               hsic_norm=float(np.sqrt(m.self_hsic(scores_a) * m.self_hsic(scores_b)))))
    raise ValueError(f"no subspace kernel for metric {name!r}")


# ---------------------------------------------------------------- RSA kernel


@numba.njit(cache=True)
def _row_cross_exact(row_a, row_b, perm, i, chunk):  # pragma: no cover - compiled
    """sum_{j>i} row_a[j] * row_b[perm[j]] for int32 rows: exact int64 sums over `chunk` columns."""
    n = perm.size
    total = 0.0
    for start in range(i + 1, n, chunk):
        acc = np.int64(0)
        for j in range(start, min(start + chunk, n)):
            acc += np.int64(row_a[j]) * np.int64(row_b[perm[j]])
        total += np.float64(acc)
    return total


@numba.njit(cache=True, fastmath=True)
def _row_cross_fast(row_a, row_b, perm, i, chunk):  # pragma: no cover - compiled
    """The same for float32 rows: vectorised float32 sums over `chunk` columns, chunks in float64."""
    n = perm.size
    total = 0.0
    for start in range(i + 1, n, chunk):
        acc = np.float32(0.0)
        for j in range(start, min(start + chunk, n)):
            acc += row_a[j] * row_b[perm[j]]
        total += np.float64(acc)
    return total


@numba.njit(parallel=True, cache=True)
def _rank_cross_terms(ranks_a, ranks_b, perms, inverses, chunk):  # pragma: no cover - compiled
    """sum_{i<j} ranks_a[i, j] * ranks_b[p_i, p_j] for each permutation p (rows of perms), int32 ranks.

    Loops over rows u of ranks_b (shared by the whole batch, so each is read from memory once per
    batch); for permutation q the matching A row is i = p^-1(u), read contiguously from i+1 on,
    while row u is gathered at p_j from cache (half the memory traffic of looping over A rows).
    """
    n_perms, n = perms.shape
    partial = np.zeros((n, n_perms))
    for u in numba.prange(n):
        for q in range(n_perms):
            i = inverses[q, u]
            partial[u, q] = _row_cross_exact(ranks_a[i], ranks_b[u], perms[q], i, chunk)
    return partial.sum(axis=0)


@numba.njit(parallel=True, cache=True)
def _rank_cross_terms_fast(ranks_a, ranks_b, perms, inverses, chunk):  # pragma: no cover - compiled
    """_rank_cross_terms for float32 scaled ranks (float32 products, see _row_cross_fast)."""
    n_perms, n = perms.shape
    partial = np.zeros((n, n_perms))
    for u in numba.prange(n):
        for q in range(n_perms):
            i = inverses[q, u]
            partial[u, q] = _row_cross_fast(ranks_a[i], ranks_b[u], perms[q], i, chunk)
    return partial.sum(axis=0)


FAST_CHUNK = 256
"""float32 partial sums run over at most this many products before joining the float64 total."""


@dataclass
class RankCrossKernel:
    """RSA null: Pearson of fixed A ranks with permuted B ranks = cross(p) / (|Ra| |Rb|).

    precision "float64": int32 centred doubled ranks, exact int64 products (numba) or float64
    (torch). "float32": ranks scaled to unit mean square, float32 products (error ~1e-10 on r).
    """

    ranks_a: np.ndarray  # [n, n] int32 (float64 precision) or float32 scaled ranks, zero diagonal
    ranks_b: np.ndarray  # [n, n]
    norm: float  # divisor turning the cross term into r
    device: torch.device
    precision: str = "float64"
    _device_ranks: tuple | None = field(default=None, repr=False, compare=False)  # torch copies, made once

    @property
    def n_pairs(self) -> int:
        return int(self.ranks_a.shape[0])

    def scores(self, perms: np.ndarray) -> np.ndarray:
        if self.device.type == "cpu":
            return self._scores_numba(perms)
        return self._scores_torch(perms)

    def _scores_numba(self, perms: np.ndarray) -> np.ndarray:
        perms = np.ascontiguousarray(perms, dtype=np.int32)
        inverses = np.argsort(perms, axis=1).astype(np.int32)
        if self.precision == "float32":
            return _rank_cross_terms_fast(self.ranks_a, self.ranks_b, perms, inverses, FAST_CHUNK) / self.norm
        largest = float(np.abs(self.ranks_a).max()) * float(np.abs(self.ranks_b).max())
        chunk = int(max(1, min(self.n_pairs, 2**62 // max(int(largest), 1))))
        return _rank_cross_terms(self.ranks_a, self.ranks_b, perms, inverses, chunk) / self.norm

    def _scores_torch(self, perms: np.ndarray) -> np.ndarray:
        if self._device_ranks is None:
            dtype = torch.float64 if self.precision == "float64" else torch.float32
            self._device_ranks = (torch.as_tensor(self.ranks_a, device=self.device).to(dtype),
                                  torch.as_tensor(self.ranks_b, device=self.device))
        ranks_a, ranks_b = self._device_ranks
        values = []
        for perm in torch.as_tensor(perms, device=self.device):
            permuted = ranks_b[perm][:, perm].to(ranks_a.dtype)  # [n, n]; symmetric with zero diagonal
            values.append((ranks_a * permuted).sum(dtype=torch.float64) / 2.0)
        return torch.stack(values).cpu().numpy() / self.norm


def _scaled_ranks(ranks: m.Ranks) -> np.ndarray:
    """float32 rank matrix with unit mean square over i < j (values O(1): float32 keeps ~7 digits)."""
    n = ranks.matrix.shape[0]
    return (ranks.matrix * (np.sqrt(n * (n - 1) / 2) / ranks.norm)).astype(np.float32)


def prepare_rank(X: np.ndarray, Y: np.ndarray, device: torch.device, precision: str,
                 auto: AutoPrecision = AutoPrecision()) -> tuple[m.MetricResult, RankCrossKernel]:
    """Observed RSA (float64, exact ranks) and its null kernel, from one rank computation per side."""
    ranks_a, ranks_b = m.rank_matrix(X), m.rank_matrix(Y)
    observed = m.rsa_result(ranks_a, ranks_b)
    n_upper = ranks_a.upper.size
    if _choose_precision(precision, n_upper, auto.max_gathered_pairs) == "float32":
        return observed, RankCrossKernel(_scaled_ranks(ranks_a), _scaled_ranks(ranks_b), float(n_upper), device,
                                         "float32")
    return observed, RankCrossKernel(ranks_a.matrix, ranks_b.matrix, m.rank_norms(ranks_a, ranks_b), device)


# ---------------------------------------------------------------- mutual kNN kernel


@dataclass
class NeighbourKernel:
    """mutual_knn null: overlap of N_X(i) with p^-1(N_Y(p_i)); integer counts, exact."""

    neighbours_a: torch.Tensor  # [n, k] int64
    neighbours_b: torch.Tensor  # [n, k] int64

    @property
    def n_pairs(self) -> int:
        return int(self.neighbours_a.shape[0])

    def scores(self, perms: np.ndarray) -> np.ndarray:
        perm = torch.as_tensor(perms, device=self.neighbours_b.device)  # [batch, n]
        inverse = torch.argsort(perm, dim=1)
        batch, n = perm.shape
        k = self.neighbours_a.shape[1]
        # neighbours of row i in Y[p]: inverse[N_Y[p_i]]
        mapped = torch.gather(inverse, 1, self.neighbours_b[perm].reshape(batch, n * k)).reshape(batch, n, k)
        shared = (self.neighbours_a[None, :, :, None] == mapped[:, :, None, :]).any(dim=3).sum(dim=(1, 2))
        return shared.double().cpu().numpy() / (n * k)


def prepare_neighbours(X: np.ndarray, Y: np.ndarray, k: int,
                       device: torch.device) -> tuple[m.MetricResult, NeighbourKernel | None]:
    """Observed mutual_knn and its kernel; no kernel when Y has a tie at some row's k-th neighbour
    (which neighbour is kept then depends on the row order, so permuting Y is not a relabelling)."""
    k = m.check_knn_k(k, X.shape[0])
    neighbours_a, _ = m.knn_indices(X, k)
    neighbours_b, tied = m.knn_indices(Y, k)
    observed = m.MetricResult(m.neighbour_overlap(neighbours_a, neighbours_b), {"k": k})
    if tied:
        return observed, None
    return observed, NeighbourKernel(torch.as_tensor(neighbours_a, device=device),
                                     torch.as_tensor(neighbours_b, device=device))


def prepare(name: str, X: np.ndarray, Y: np.ndarray, options: dict, device: torch.device, precision: str,
            auto: AutoPrecision = AutoPrecision()) -> tuple[m.MetricResult, object | None] | None:
    """(observed, kernel) for a registry metric with a fast null, None for one without."""
    if name in ("svcca", "svcca_legacy", "procrustes", "cka", "cka_unbiased"):
        return prepare_subspace(name, X, Y, options, device, precision, auto)
    if name == "rsa":
        return prepare_rank(X, Y, device, precision, auto)
    if name == "mutual_knn":
        return prepare_neighbours(X, Y, options["k"], device)
    return None


def batch_size_for(kernel, memory_bytes: int = 256 * 2**20) -> int:
    """Permutations per batch: the gathered data of a batch stays near `memory_bytes`."""
    if isinstance(kernel, RankCrossKernel):
        if kernel.device.type == "cpu":
            return 16  # numba: each row of ranks_b is read from memory once per batch of 16
        per_permutation = kernel.n_pairs**2 * 12  # int32 gather + float64 copy
    elif isinstance(kernel, SubspaceKernel):
        per_permutation = kernel.n_pairs * kernel.gathered_width * kernel.factors_a.element_size()
    else:
        per_permutation = kernel.n_pairs * int(kernel.neighbours_a.shape[1]) ** 2
    return int(max(1, min(256, memory_bytes // max(per_permutation, 1))))


def kernel_device(kernel) -> torch.device:
    """The device a kernel computes on."""
    if isinstance(kernel, SubspaceKernel):
        return kernel.factors_a.device
    if isinstance(kernel, NeighbourKernel):
        return kernel.neighbours_a.device
    return kernel.device
