"""Fast permutation-null kernels: the metric of (X, Y[p]) for batches of row permutations p.

Each kernel precomputes what a row permutation of Y does not change and returns, for a batch of
permutations [batch, n], the metric values [batch] (float64). `prepare` also returns the observed
value, computed in float64 by the metric's own functions (featsim.metrics) from the same SVDs,
ranks or neighbour lists the kernel is built from, so each side is decomposed once.

- SubspaceKernel (svcca, svcca_legacy, procrustes, cka, cka_unbiased): fixed factors Fa [n, ra],
  Fb [n, rb] (orthonormal SVCCA bases, or principal-component scores); per permutation only
  M = Fa^T Fb[p] changes. float32 GEMM + eigenvalues of the small Gram (fast) or float64 GEMM +
  singular values (exact).
- RankCrossKernel (rsa): per permutation only the cross term sum_{i<j} Ra[i, j] Rb[p_i, p_j]
  changes: exact int64 products of int32 ranks (float64), or float32 products of scaled ranks
  (float32, ~2x faster); numba on CPU (numpy for small nulls), torch on GPU.
- NeighbourKernel (mutual_knn): neighbour lists of both sides; Y[p]'s neighbours of row i are
  p^-1(N_Y(p_i)), exact as long as Y has no tie at a k-th neighbour.

Arrays live on a Backend: torch on a GPU; on CPU numpy for small nulls and torch for large GEMM
kernels (TORCH_CPU_MIN_WORK). torch is imported only by the torch backend, so a small CPU scoring job
does not pay its ~2 s import.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from featsim import metrics as m
from featsim import null_moments

# ---------------------------------------------------------------- array backends


class NumpyBackend:
    """CPU arrays: numpy with OpenBLAS/LAPACK (the BLAS thread count is set by featsim.null)."""

    device = "cpu"
    is_cpu = True

    def tensor(self, array: np.ndarray, precision: str) -> np.ndarray:
        return np.ascontiguousarray(array, dtype=np.float64 if precision == "float64" else np.float32)

    def index(self, array: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(array, dtype=np.int64)

    def argsort_rows(self, index: np.ndarray) -> np.ndarray:
        return np.argsort(index, axis=1)

    def take_rows(self, source: np.ndarray, index: np.ndarray, out: np.ndarray) -> np.ndarray:
        return np.take(source, index, axis=0, out=out)

    def take_along_rows(self, source: np.ndarray, index: np.ndarray) -> np.ndarray:
        return np.take_along_axis(source, index, axis=1)

    def empty(self, shape: tuple[int, ...], like: np.ndarray) -> np.ndarray:
        return np.empty(shape, dtype=like.dtype)

    def eigvalsh(self, gram: np.ndarray) -> np.ndarray:
        return np.linalg.eigvalsh(gram)

    def svdvals(self, products: np.ndarray) -> np.ndarray:
        return np.linalg.svd(products, compute_uv=False)

    def numpy64(self, array: np.ndarray) -> np.ndarray:
        return np.asarray(array, dtype=np.float64)

    def element_size(self, array: np.ndarray) -> int:
        return int(array.itemsize)


class TorchBackend:
    """Arrays on a torch device (a GPU in production; the tests also run it on CPU tensors)."""

    def __init__(self, device: Any = "cuda"):
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self.is_cpu = self.device.type == "cpu"

    def tensor(self, array: np.ndarray, precision: str):
        dtype = self.torch.float64 if precision == "float64" else self.torch.float32
        return self.torch.as_tensor(np.ascontiguousarray(array), dtype=dtype, device=self.device)

    def index(self, array: np.ndarray):
        return self.torch.as_tensor(np.ascontiguousarray(array, dtype=np.int64), device=self.device)

    def argsort_rows(self, index):
        return self.torch.argsort(index, dim=1)

    def take_rows(self, source, index, out):
        return self.torch.index_select(source, 0, index, out=out)

    def take_along_rows(self, source, index):
        return self.torch.gather(source, 1, index)

    def empty(self, shape: tuple[int, ...], like):
        return self.torch.empty(shape, dtype=like.dtype, device=like.device)

    def eigvalsh(self, gram):
        return self.torch.linalg.eigvalsh(gram)

    def svdvals(self, products):
        return self.torch.linalg.svdvals(products)

    def numpy64(self, array) -> np.ndarray:
        return array.double().cpu().numpy()

    def element_size(self, array) -> int:
        return int(array.element_size())


Backend = NumpyBackend | TorchBackend

TORCH_CPU_MIN_WORK = 2e10
"""Multiply-adds (permutations x n x ra x rb) above which a CPU GEMM kernel runs on torch rather than
numpy. Measured per permutation on 2 cores: torch 1.5-2x faster at every size (0.19 vs 0.45 ms at
n=150, 64x96; 39 vs 53 ms at n=5,000, 416x568, float32), but importing torch costs ~2 s, which only
pays off above ~10 s of numpy work."""


def cpu_gemm_backend(backend: Backend, work: float) -> Backend:
    """The backend of a GEMM kernel of `work` multiply-adds: torch on CPU for large CPU work."""
    if isinstance(backend, NumpyBackend) and work > TORCH_CPU_MIN_WORK:
        return TorchBackend("cpu")
    return backend


# ---------------------------------------------------------------- subspace / CKA kernels


@dataclass
class SubspaceKernel:
    """Null of metrics that are functions of the singular values of Fa^T P Fb (+ per-row terms).

    statistic: "mean_sv" (svcca: mean of min(ra, rb) singular values, each clipped to [0, 1]),
    "sum_sv" (procrustes: nuclear norm, clipped to <= 1), "cka" (||M||_F^2 / denominator),
    "cka_unbiased" (unbiased HSIC from ||M||_F^2 and the permuted per-row terms).
    """

    factors_a: Any  # [n, ra], an array of `backend`
    factors_b: Any  # [n, rb]
    statistic: str
    precision: str  # "float32" | "float64"
    backend: Backend
    denominator: float = 1.0
    row_terms_a: tuple[np.ndarray, np.ndarray] | None = None  # cka_unbiased: diag(K), K~ 1
    row_terms_b: tuple[np.ndarray, np.ndarray] | None = None
    hsic_norm: float = 1.0  # cka_unbiased: sqrt(HSIC_aa HSIC_bb)
    moments: null_moments.Moments | None = None  # exact null mean and variance (cka, cka_unbiased)
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
        products = self._products(perms)  # [batch, ra, rb]
        if self.statistic in ("cka", "cka_unbiased"):
            cross_sq = np.square(self.backend.numpy64(products)).sum(axis=(1, 2))
            if self.statistic == "cka":
                return cross_sq / self.denominator
            return self._unbiased(cross_sq, perms)
        singular_values = self._singular_values(products)
        if self.statistic == "mean_sv":
            return np.clip(singular_values, 0.0, 1.0).mean(axis=1)
        return np.minimum(singular_values.sum(axis=1) / self.denominator, 1.0)

    def _products(self, perms: np.ndarray):
        """Fa^T P Fb for each permutation. The narrower factor is gathered (Fa^T P Fb = (P^T Fa)^T Fb,
        P^T Fa = Fa[p^-1]) into a reused per-thread buffer: fresh allocations cost more than the copy."""
        batch, n = perms.shape
        gather_a = self.factors_a.shape[1] < self.factors_b.shape[1]
        moving = self.factors_a if gather_a else self.factors_b
        rows = _inverse_permutations(perms) if gather_a else perms
        buffer = getattr(self._buffers, "gather", None)
        if buffer is None or buffer.shape[0] < batch * n:
            buffer = self._buffers.gather = self.backend.empty((batch * n, moving.shape[1]), like=moving)
        index = self.backend.index(rows.reshape(-1))
        gathered = self.backend.take_rows(moving, index, out=buffer[: batch * n]).reshape(batch, n, -1)
        if gather_a:
            return gathered.swapaxes(1, 2) @ self.factors_b
        return self.factors_a.T @ gathered

    def _singular_values(self, products) -> np.ndarray:
        """Singular values [batch, min(ra, rb)] of each product, float64."""
        if self.precision == "float64":
            return self.backend.numpy64(self.backend.svdvals(products))
        # Eigenvalues of the smaller Gram matrix are the squared singular values: in float32 about
        # 3x cheaper than an SVD and within featsim.null.NULL_TOLERANCE of the float64 metric.
        if products.shape[1] <= products.shape[2]:
            gram = products @ products.swapaxes(1, 2)
        else:
            gram = products.swapaxes(1, 2) @ products
        return np.sqrt(np.maximum(self.backend.numpy64(self.backend.eigvalsh(gram)), 0.0))

    def _unbiased(self, cross_sq: np.ndarray, perms: np.ndarray) -> np.ndarray:
        sq_a, rows_a = self.row_terms_a
        sq_b, rows_b = self.row_terms_b
        values = np.array([m.unbiased_hsic(float(c), sq_a, sq_b[p], rows_a, rows_b[p])
                           for c, p in zip(cross_sq, perms)])
        return np.clip(values / self.hsic_norm, -1.0, 1.0)


def _inverse_permutations(perms: np.ndarray) -> np.ndarray:
    """p^-1 for each row p of perms [batch, n] (a scatter, O(n) per row)."""
    inverse = np.empty_like(perms)
    np.put_along_axis(inverse, perms, np.arange(perms.shape[1], dtype=perms.dtype)[None, :], axis=1)
    return inverse


@dataclass(frozen=True)
class AutoPrecision:
    """precision="auto": float64 while a permutation costs at most this much, float32 beyond."""

    max_gemm_multiply_adds: int = 50_000_000  # n * ra * rb of the GEMM kernels (BLAS speed)
    max_gathered_pairs: int = 2_000_000  # n (n - 1) / 2 of the RSA kernel (gather-bound, ~20x slower per pair)


def _choose_precision(precision: str, cost: int, limit: int) -> str:
    if precision == "auto":
        return "float64" if cost <= limit else "float32"
    return precision


def prepare_subspace(name: str, X: np.ndarray, Y: np.ndarray, options: dict, backend: Backend,
                     precision: str, auto: AutoPrecision,
                     n_permutations: int = 0) -> tuple[m.MetricResult, SubspaceKernel]:
    """Observed value (float64, the metric's own code) and null kernel of a GEMM-structured metric,
    both from one SVD per side. `n_permutations` sizes the work that picks numpy or torch on CPU."""
    n = X.shape[0]
    if name in ("svcca", "svcca_legacy"):
        fixed_k = options.get("k") if name == "svcca" else 1
        threshold = options.get("threshold") if fixed_k is None else None
        side_a, side_b = m.svcca_bases(X, Y, threshold, fixed_k)
        observed = m.svcca_result(side_a, side_b, threshold, fixed_k if name == "svcca" else None)
        chosen = _choose_precision(precision, n * side_a.k * side_b.k, auto.max_gemm_multiply_adds)
        backend = cpu_gemm_backend(backend, n_permutations * n * side_a.k * side_b.k)
        return observed, SubspaceKernel(backend.tensor(side_a.basis, chosen), backend.tensor(side_b.basis, chosen),
                                        "mean_sv", chosen, backend)
    scores_a, scores_b = m.centred_scores(X), m.centred_scores(Y)
    chosen = _choose_precision(precision, n * scores_a.shape[1] * scores_b.shape[1], auto.max_gemm_multiply_adds)
    backend = cpu_gemm_backend(backend, n_permutations * n * scores_a.shape[1] * scores_b.shape[1])
    factors_a, factors_b = backend.tensor(scores_a, chosen), backend.tensor(scores_b, chosen)
    if name == "procrustes":
        return (m.procrustes_result(scores_a, scores_b),
                SubspaceKernel(factors_a, factors_b, "sum_sv", chosen, backend,
                               denominator=m.procrustes_norm(scores_a, scores_b)))
    if name == "cka":
        denominator = m.cka_denominator(scores_a, scores_b)
        return (m.cka_result(scores_a, scores_b),
                SubspaceKernel(factors_a, factors_b, "cka", chosen, backend, denominator=denominator,
                               moments=null_moments.cka_moments(scores_a, scores_b, denominator)))
    if name == "cka_unbiased":
        hsic_norm = float(np.sqrt(m.self_hsic(scores_a) * m.self_hsic(scores_b)))
        return (m.cka_unbiased_result(scores_a, scores_b),
                SubspaceKernel(factors_a, factors_b, "cka_unbiased", chosen, backend,
                               row_terms_a=m.kernel_terms(scores_a), row_terms_b=m.kernel_terms(scores_b),
                               hsic_norm=hsic_norm,
                               moments=null_moments.cka_unbiased_moments(scores_a, scores_b, hsic_norm)))
    raise ValueError(f"no subspace kernel for metric {name!r}")


# ---------------------------------------------------------------- RSA kernel



RSA_NUMPY_MAX_WORK = 1e9
"""Gathered rank entries (permutations x n^2) up to which the CPU RSA null runs in numpy rather than
numba: below it numba's import and cache load (~0.5 s a process) cost more than they save."""

RSA_NUMPY_MAX_PAIRS = 1000
"""...and at most this many pairs, so int64 sums of doubled-rank products cannot overflow."""


@dataclass
class RankCrossKernel:
    """RSA null: Pearson of fixed A ranks with permuted B ranks = cross(p) / (|Ra| |Rb|).

    precision "float64": int32 centred doubled ranks, exact int64 products (numba, numpy) or float64
    (torch). "float32": ranks scaled to unit mean square, float32 products (error ~1e-10 on r).
    engine: "numba" (CPU), "numpy" (CPU, small nulls) or "torch" (GPU).
    """

    ranks_a: np.ndarray  # [n, n] int32 (float64 precision) or float32 scaled ranks, zero diagonal
    ranks_b: np.ndarray  # [n, n]
    norm: float  # divisor turning the cross term into r
    backend: Backend
    precision: str = "float64"
    engine: str = "numba"
    moments: null_moments.Moments | None = None  # exact null mean and variance (Mantel)
    _device_ranks: tuple | None = field(default=None, repr=False, compare=False)  # torch copies, made once

    @property
    def n_pairs(self) -> int:
        return int(self.ranks_a.shape[0])

    def scores(self, perms: np.ndarray) -> np.ndarray:
        if self.engine == "numba":
            return self._scores_numba(perms)
        if self.engine == "numpy":
            return self._scores_numpy(perms)
        return self._scores_torch(perms)

    def _scores_numba(self, perms: np.ndarray) -> np.ndarray:
        from featsim import _rank_kernels

        perms = np.ascontiguousarray(perms, dtype=np.int32)
        inverses = _inverse_permutations(perms)
        if self.precision == "float32":
            return _rank_kernels.rank_cross_terms_fast(self.ranks_a, self.ranks_b, perms, inverses,
                                                       _rank_kernels.FAST_CHUNK) / self.norm
        largest = float(np.abs(self.ranks_a).max()) * float(np.abs(self.ranks_b).max())
        chunk = int(max(1, min(self.n_pairs, 2**62 // max(int(largest), 1))))
        return _rank_kernels.rank_cross_terms(self.ranks_a, self.ranks_b, perms, inverses, chunk) / self.norm

    def _scores_numpy(self, perms: np.ndarray) -> np.ndarray:
        """Whole permuted rank matrices dotted with A's ranks: a float64 BLAS product, exact for integer
        ranks while every partial sum stays below 2^53, else exact int64 products."""
        n = self.n_pairs
        largest = float(np.abs(self.ranks_a).max()) * float(np.abs(self.ranks_b).max()) * n * n
        wide = np.float64 if self.precision == "float32" or largest < 2.0**53 else np.int64
        permuted = self.ranks_b[perms[:, :, None], perms[:, None, :]].reshape(len(perms), n * n)  # [batch, n^2]
        cross = permuted.astype(wide) @ self.ranks_a.reshape(n * n).astype(wide)
        return cross.astype(np.float64) / 2.0 / self.norm

    def _scores_torch(self, perms: np.ndarray) -> np.ndarray:
        torch = self.backend.torch
        if self._device_ranks is None:
            dtype = torch.float64 if self.precision == "float64" else torch.float32
            self._device_ranks = (torch.as_tensor(self.ranks_a, device=self.backend.device).to(dtype),
                                  torch.as_tensor(self.ranks_b, device=self.backend.device))
        ranks_a, ranks_b = self._device_ranks
        values = []
        for perm in self.backend.index(perms):
            permuted = ranks_b[perm][:, perm].to(ranks_a.dtype)  # [n, n]; symmetric with zero diagonal
            values.append((ranks_a * permuted).sum(dtype=torch.float64) / 2.0)
        return torch.stack(values).cpu().numpy() / self.norm


def _rank_engine(backend: Backend, n: int, n_permutations: int) -> str:
    if not backend.is_cpu:
        return "torch"
    small = n <= RSA_NUMPY_MAX_PAIRS and n_permutations * n * n <= RSA_NUMPY_MAX_WORK
    return "numpy" if small else "numba"


def _scaled_ranks(ranks: m.Ranks) -> np.ndarray:
    """float32 rank matrix with unit mean square over i < j (values O(1): float32 keeps ~7 digits)."""
    n = ranks.matrix.shape[0]
    scale = np.sqrt(n * (n - 1) / 2) / ranks.norm
    scaled = np.empty(ranks.matrix.shape, dtype=np.float32)
    for start in range(0, n, m.RANK_BLOCK):  # row blocks: no n x n float64 temporary (~0.8 GB at n = 10,000)
        scaled[start:start + m.RANK_BLOCK] = (ranks.matrix[start:start + m.RANK_BLOCK] * scale).astype(np.float32)
    return scaled


def prepare_rank(X: np.ndarray, Y: np.ndarray, backend: Backend, precision: str,
                 auto: AutoPrecision = AutoPrecision(),
                 n_permutations: int = 0) -> tuple[m.MetricResult, RankCrossKernel]:
    """Observed RSA (float64, exact ranks) and its null kernel, from one rank computation per side."""
    ranks_a, ranks_b = m.rank_matrix(X), m.rank_matrix(Y)
    observed = m.rsa_result(ranks_a, ranks_b)
    n_upper = ranks_a.upper.size
    engine = _rank_engine(backend, X.shape[0], n_permutations)
    moments = null_moments.rsa_moments(ranks_a.matrix, ranks_b.matrix, m.rank_norms(ranks_a, ranks_b))
    if _choose_precision(precision, n_upper, auto.max_gathered_pairs) == "float32":
        return observed, RankCrossKernel(_scaled_ranks(ranks_a), _scaled_ranks(ranks_b), float(n_upper), backend,
                                         "float32", engine, moments)
    return observed, RankCrossKernel(ranks_a.matrix, ranks_b.matrix, m.rank_norms(ranks_a, ranks_b), backend,
                                     engine=engine, moments=moments)


# ---------------------------------------------------------------- mutual kNN kernel


@dataclass
class NeighbourKernel:
    """mutual_knn null: overlap of N_X(i) with p^-1(N_Y(p_i)); integer counts, exact."""

    neighbours_a: Any  # [n, k] int64, an array of `backend`
    neighbours_b: Any  # [n, k] int64
    backend: Backend
    moments: null_moments.Moments | None = None  # exact null mean and variance (directed-adjacency QAP)

    @property
    def n_pairs(self) -> int:
        return int(self.neighbours_a.shape[0])

    def scores(self, perms: np.ndarray) -> np.ndarray:
        perm = self.backend.index(perms)  # [batch, n]
        inverse = self.backend.index(_inverse_permutations(perms))
        batch, n = perms.shape
        k = self.neighbours_a.shape[1]
        # neighbours of row i in Y[p]: inverse[N_Y[p_i]]
        mapped = self.backend.take_along_rows(inverse, self.neighbours_b[perm].reshape(batch, n * k))
        mapped = mapped.reshape(batch, n, k)
        shared = (self.neighbours_a[None, :, :, None] == mapped[:, :, None, :]).any(3).sum((1, 2))
        return self.backend.numpy64(shared) / (n * k)


def prepare_neighbours(X: np.ndarray, Y: np.ndarray, k: int,
                       backend: Backend) -> tuple[m.MetricResult, NeighbourKernel | None]:
    """Observed mutual_knn and its kernel; no kernel when Y has a tie at some row's k-th neighbour
    (which neighbour is kept then depends on the row order, so permuting Y is not a relabelling)."""
    k = m.check_knn_k(k, X.shape[0])
    neighbours_a, _ = m.knn_indices(X, k)
    neighbours_b, tied = m.knn_indices(Y, k)
    observed = m.MetricResult(m.neighbour_overlap(neighbours_a, neighbours_b), {"k": k})
    if tied:
        return observed, None
    return observed, NeighbourKernel(backend.index(neighbours_a), backend.index(neighbours_b), backend,
                                     null_moments.mutual_knn_moments(neighbours_a, neighbours_b))


def prepare(name: str, X: np.ndarray, Y: np.ndarray, options: dict, backend: Backend, precision: str,
            auto: AutoPrecision = AutoPrecision(),
            n_permutations: int = 0) -> tuple[m.MetricResult, object | None] | None:
    """(observed, kernel) for a registry metric with a fast null, None for one without."""
    if name in ("svcca", "svcca_legacy", "procrustes", "cka", "cka_unbiased"):
        return prepare_subspace(name, X, Y, options, backend, precision, auto, n_permutations)
    if name == "rsa":
        return prepare_rank(X, Y, backend, precision, auto, n_permutations)
    if name == "mutual_knn":
        return prepare_neighbours(X, Y, options["k"], backend)
    return None


def batch_size_for(kernel, memory_bytes: int = 256 * 2**20) -> int:
    """Permutations per batch: the gathered data of a batch stays near `memory_bytes`."""
    if isinstance(kernel, RankCrossKernel):
        if kernel.engine == "numba":
            return 16  # numba: each row of ranks_b is read from memory once per batch of 16
        per_permutation = kernel.n_pairs**2 * 12  # int32 gather + 64-bit copy
    elif isinstance(kernel, SubspaceKernel):
        per_permutation = kernel.n_pairs * kernel.gathered_width * kernel.backend.element_size(kernel.factors_a)
    else:
        per_permutation = kernel.n_pairs * int(kernel.neighbours_a.shape[1]) ** 2
    return int(max(1, min(256, memory_bytes // max(per_permutation, 1))))


def backend_name(kernel) -> str:
    """What computes a kernel's null: "numba", "numpy" or "torch"."""
    if isinstance(kernel, RankCrossKernel):
        return kernel.engine
    return "numpy" if isinstance(kernel.backend, NumpyBackend) else "torch"
