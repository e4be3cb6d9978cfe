"""numba kernels of the RSA null on CPU: cross terms sum_{i<j} Ra[i, j] Rb[p_i, p_j] for permutation batches.

A module of its own so that only large RSA nulls pay numba's import and cache load (~0.5 s a process).
"""

from __future__ import annotations

import numba
import numpy as np


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
def rank_cross_terms(ranks_a, ranks_b, perms, inverses, chunk):  # pragma: no cover - compiled
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
def rank_cross_terms_fast(ranks_a, ranks_b, perms, inverses, chunk):  # pragma: no cover - compiled
    """rank_cross_terms for float32 scaled ranks (float32 products, see _row_cross_fast)."""
    n_perms, n = perms.shape
    partial = np.zeros((n, n_perms))
    for u in numba.prange(n):
        for q in range(n_perms):
            i = inverses[q, u]
            partial[u, q] = _row_cross_fast(ranks_a[i], ranks_b[u], perms[q], i, chunk)
    return partial.sum(axis=0)


FAST_CHUNK = 256
"""float32 partial sums run over at most this many products before joining the float64 total."""
