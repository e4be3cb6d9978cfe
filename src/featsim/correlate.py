"""Exact Pearson correlation between every latent of SAE A and every latent of SAE B, both directions.

For each B latent its top-k A partners and for each A latent its top-k B partners, computed without
materialising the d_A x d_B matrix: a sparse numba kernel on CPU (`_correlate_kernel`), or dense
Z_A^T Z_B tiles with torch on a GPU (or on CPU when the codes are dense, e.g. MLP neurons). Correlations
are over all token rows (the unmasked tokens), with population (1/N) moments; the 1/N vs 1/(N-1) choice
cancels in a correlation. Sums are float64.

Precision: means are float64 sums; variances use the centred two-pass sum (zeros included), so an
offset does not cancel; products of float32 codes are exact in float64. The covariance
S_ij / N - mean_i mean_j keeps the cross moment sparse (centring it would densify it), so its
rounding error relative to the correlation is about 1e-16 * |mean_i / std_i| * |mean_j / std_j|:
negligible for sparse codes (|mean / std| ~ sqrt(firing rate) < 1), and logged as a warning when a
pair of nearly-always-active, nearly-constant latents makes it exceed ILL_CONDITIONED * 1e-16.
Latents firing on fewer than `min_active` tokens (or with zero variance) are excluded: they get no
partners (index -1, value NaN) and are never anyone's partner.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import math
import os
import sys
import time
from dataclasses import dataclass, fields
from typing import Any, Sequence

import numba
import numpy as np
import scipy.sparse as sp
from tqdm.auto import tqdm

from featsim import _correlate_kernel as kernel
from featsim.alignment import RowPairs
from featsim.correlation_result import CorrelationResult
from featsim.errors import ConfigError, reject_unknown_keys
from featsim.stores import CodesStore, damaged

log = logging.getLogger(__name__)

STREAM_CHUNK_ROWS = 65536  # token rows read from a code store at a time
# co-firing products (or correlation-pass entries) per second per CPU thread of the sparse kernel,
# measured with benchmarks/correlation.py on a shared 2-core box; used only to choose the engine
SPARSE_PRODUCTS_PER_SECOND = 2.5e8
DENSE_TILE_BYTES = 1 << 30  # bound on one dense [tokens, d_a] float64 tile of the torch path
# The dense torch path on CPU (used by `auto` for dense codes, e.g. MLP neurons), measured on the same box
# (60k tokens x 256 x 384 latents, densities 0.15-1; 30k x 1024 x 1024): float64 matmul throughput per torch
# thread (~50e9 measured, halved for a shared box), seconds per stored entry of the setup it does besides
# the matmul (token-sorting B, index casts, scattering A again for each B block; 0.9-1.5e-7 measured),
# and its extra memory per stored entry (int64 indices, float64 values, sorted copies; 56 B measured with
# tiles, counted separately here). `auto` keeps it within DENSE_CPU_MAX_BYTES.
DENSE_CPU_FLOPS_PER_THREAD = 2.5e10
DENSE_CPU_SECONDS_PER_ENTRY = 1.5e-7
DENSE_CPU_BYTES_PER_ENTRY = 48
DENSE_CPU_MAX_BYTES = 4 << 30
SUBSET_NUMPY_MAX_LATENTS = 512
"""`auto` correlates latent subsets of at most this many latents per side (concept subspaces) densely in
numpy: loading the compiled sparse kernels costs ~2 s a process, far more than such a product."""
ILL_CONDITIONED = 1e6  # |mean_a / std_a| * |mean_b / std_b| above which a warning is logged (see Precision)


@dataclass(frozen=True)
class CorrelationConfig:
    """The `correlation` config slice (its defaults are the schema's: tests/test_config_defaults.py)."""

    min_active: int = 5
    top_k: int = 8
    device: str = "auto"
    block_latents: int = 4096

    @classmethod
    def from_config(cls, slice_: dict | None) -> "CorrelationConfig":
        reject_unknown_keys(dict(slice_ or {}), {f.name for f in fields(cls)}, "correlation")
        return cls(**(slice_ or {}))


@dataclass
class _Side:
    """One model's codes restricted to the latents that take part, plus full-width per-latent stats.

    Stored by token (CSR: `pointers` [n_tokens + 1], `positions` = compact latent ids) for side A, or by
    latent (CSC: `pointers` [n_used + 1], `positions` = token rows, ascending) for side B.
    """

    pointers: np.ndarray  # int64
    positions: np.ndarray  # [nnz] int32
    values: np.ndarray  # [nnz] float32 or float64
    n_tokens: int
    n_active: np.ndarray  # [d] int64
    mean: np.ndarray  # [d] float64
    std: np.ndarray  # [d] float64
    subset: np.ndarray  # [d] bool
    used: np.ndarray  # [d] bool
    used_ids: np.ndarray  # [n_used] int64 original id of each compact id

    @property
    def n_used(self) -> int:
        return int(self.used_ids.size)


# ---------------------------------------------------------------- loading


_FLOAT32_EXACT = {np.dtype(t) for t in (np.bool_, np.int8, np.uint8, np.int16, np.uint16, np.float16, np.float32)}


def _value_dtype(codes: Any) -> np.dtype:
    """float32 when every stored value is exactly a float32 (float16/float32/small ints), else float64."""
    if isinstance(codes, CodesStore):
        dtype = codes.group["values"].dtype
    elif sp.issparse(codes):
        dtype = codes.dtype
    else:
        dtype = np.asarray(codes).dtype
    return np.dtype(np.float32) if np.dtype(dtype) in _FLOAT32_EXACT else np.dtype(np.float64)


def _shape(codes: Any) -> tuple[int, int]:
    return (codes.n_tokens, codes.d_sae) if isinstance(codes, CodesStore) else tuple(codes.shape)


def _read_csr(codes: Any, value_dtype: np.dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """CSR arrays (indptr int64, indices int32, values) of a code store, streamed chunk by chunk, or of a
    matrix (without copying where the dtypes already fit); duplicate entries are summed."""
    if isinstance(codes, CodesStore):
        indptr = np.empty(codes.n_tokens + 1, np.int64)
        indices = np.empty(codes.nnz, np.int32)
        values = np.empty(codes.nnz, value_dtype)
        indptr[0] = 0
        row, entry = 0, 0
        for chunk in codes.iter_chunks(STREAM_CHUNK_ROWS):
            n_rows, nnz = chunk.shape[0], chunk.nnz
            indptr[row + 1:row + n_rows + 1] = chunk.indptr[1:] + entry
            indices[entry:entry + nnz] = chunk.indices
            values[entry:entry + nnz] = chunk.data
            row, entry = row + n_rows, entry + nnz
        if row != codes.n_tokens or entry != codes.nnz:
            raise damaged(codes.path, "codes", f"it holds {row} rows / {entry} entries but its attrs say "
                                               f"{codes.n_tokens} / {codes.nnz}")
        width = codes.d_sae
    else:
        csr = sp.csr_matrix(codes)
        indptr, indices = np.asarray(csr.indptr, np.int64), np.asarray(csr.indices, np.int32)
        values, width = np.asarray(csr.data, value_dtype), int(csr.shape[1])
    if kernel.has_duplicates(indptr, indices, width):
        csr = sp.csr_matrix((values, indices, indptr), shape=(indptr.size - 1, width))
        csr.sum_duplicates()
        indptr, indices, values = csr.indptr.astype(np.int64), csr.indices.astype(np.int32), csr.data
    return indptr, indices, values, width


def _subset_mask(latents: Sequence[int] | np.ndarray | None, width: int, name: str) -> np.ndarray:
    if latents is None:
        return np.ones(width, bool)
    ids = np.asarray(latents)
    if ids.ndim != 1 or not (ids.size == 0 or np.issubdtype(ids.dtype, np.integer)):
        raise ValueError(f"{name} must be a 1-D array of integer latent ids")
    if ids.size and (ids.min() < 0 or ids.max() >= width):
        raise ValueError(f"{name} holds ids outside [0, {width})")
    mask = np.zeros(width, bool)
    mask[ids] = True
    return mask


def _check_rows(rows: np.ndarray, n_tokens: int) -> None:
    if rows.shape != (n_tokens,) or rows.dtype != bool:
        raise ValueError(f"rows must be a bool mask over the {n_tokens} token rows, got {rows.dtype} {rows.shape}")


def _check_row_indices(rows: np.ndarray, n_tokens: int) -> None:
    if rows.ndim != 1 or not np.issubdtype(rows.dtype, np.integer):
        raise ValueError(f"aligned rows must be 1-D integer row indices, got {rows.dtype} {rows.shape}")
    if rows.size and (rows.min() < 0 or rows.max() >= n_tokens):
        raise ValueError(f"aligned rows hold indices outside the {n_tokens} code rows: the alignment store was made "
                         "from other token stores than these codes")


def _select_rows(indptr: np.ndarray, indices: np.ndarray, values: np.ndarray,
                 rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The CSR arrays of the rows where the bool mask `rows` is True, or of the rows an integer index array
    lists, in its order (aligned rows, featsim.alignment.RowPairs: the gathered rows line up across sides)."""
    counts = np.diff(indptr)
    if rows.dtype != bool:
        _check_row_indices(rows, indptr.size - 1)
        selected = np.zeros(rows.size + 1, np.int64)
        np.cumsum(counts[rows], out=selected[1:])
        entry_ids = np.repeat(indptr[rows] - selected[:-1], counts[rows]) + np.arange(selected[-1])
        return selected, indices[entry_ids], values[entry_ids]
    _check_rows(rows, indptr.size - 1)
    keep_entries = np.repeat(rows, counts)
    selected = np.zeros(int(rows.sum()) + 1, np.int64)
    np.cumsum(counts[rows], out=selected[1:])
    return selected, indices[keep_entries], values[keep_entries]


def _load_side(codes: Any, latents: Any, min_active: int, value_dtype: np.dtype, name: str,
               by_latent: bool, rows: np.ndarray | None = None) -> _Side:
    """Read codes (only `rows`, when given), compute per-latent stats, keep the latents that take part
    (CSR, or CSC if by_latent)."""
    indptr, indices, values, width = _read_csr(codes, value_dtype)
    if rows is not None:
        indptr, indices, values = _select_rows(indptr, indices, values, rows)
    n_tokens = indptr.size - 1
    n_active, mean, std = kernel.column_stats(indices, values, width, n_tokens)
    subset = _subset_mask(latents, width, name)
    used = subset & (n_active >= min_active) & (std > 0)
    used_ids = np.flatnonzero(used)
    column_map = np.full(width, -1, np.int64)
    column_map[used_ids] = np.arange(used_ids.size)
    kept_counts = n_active[used_ids]
    positions = np.empty(int(kept_counts.sum()), np.int32)
    kept_values = np.empty(positions.size, values.dtype)
    if by_latent:
        pointers = np.zeros(used_ids.size + 1, np.int64)
        np.cumsum(kept_counts, out=pointers[1:])
        kernel.compact_csc(indptr, indices, values, column_map, pointers, positions, kept_values)
    else:
        pointers = np.empty(n_tokens + 1, np.int64)
        kernel.compact_csr(indptr, indices, values, column_map, pointers, positions, kept_values)
    return _Side(pointers, positions, kept_values, n_tokens, n_active, mean, std, subset, used, used_ids)


def _column_stats_numpy(indices: np.ndarray, values: np.ndarray, width: int, n_rows: int):
    """`_correlate_kernel.column_stats` in numpy: nonzero count, mean and two-pass population std."""
    nonzero = values != 0
    columns, entries = indices[nonzero], values[nonzero].astype(np.float64)
    counts = np.bincount(columns, minlength=width).astype(np.int64)
    means = np.bincount(columns, weights=entries, minlength=width) / n_rows
    centred = np.bincount(columns, weights=(entries - means[columns]) ** 2, minlength=width)
    centred += (n_rows - counts) * means * means
    return counts, means, np.sqrt(centred / n_rows)


def _load_subset_side(codes: Any, latents: Any, min_active: int, value_dtype: np.dtype, name: str,
                      rows: np.ndarray | None) -> tuple[_Side, np.ndarray]:
    """A side for the subset engine (scipy and numpy only) and its used latents densified [tokens, n_used]."""
    if isinstance(codes, CodesStore):
        matrix = sp.vstack(list(codes.iter_chunks(STREAM_CHUNK_ROWS)), format="csr")
    else:
        matrix = sp.csr_matrix(codes)
    matrix = sp.csr_matrix(matrix, dtype=value_dtype)
    matrix.sum_duplicates()
    if rows is not None:
        if rows.dtype == bool:
            _check_rows(rows, matrix.shape[0])
        else:
            _check_row_indices(rows, matrix.shape[0])
        matrix = matrix[rows]
    n_tokens, width = matrix.shape
    n_active, mean, std = _column_stats_numpy(matrix.indices, matrix.data, width, n_tokens)
    subset = _subset_mask(latents, width, name)
    used = subset & (n_active >= min_active) & (std > 0)
    used_ids = np.flatnonzero(used)
    dense = matrix[:, used_ids].toarray().astype(np.float64)
    empty = np.empty(0, np.int64)
    return _Side(empty, empty.astype(np.int32), empty.astype(value_dtype), n_tokens, n_active, mean, std, subset,
                 used, used_ids), dense


def _top_k_rows(corr: np.ndarray, top_k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per column of corr [rows, cols]: the top_k rows by (value desc, row asc), padded -inf / EMPTY_INDEX."""
    n_rows, n_cols = corr.shape
    order = np.lexsort((np.broadcast_to(np.arange(n_rows)[:, None], corr.shape), -corr), axis=0)[:top_k]
    values = np.full((n_cols, top_k), -np.inf)
    indices = np.full((n_cols, top_k), kernel.EMPTY_INDEX, dtype=np.int64)
    values[:, :order.shape[0]] = np.take_along_axis(corr, order, axis=0).T
    indices[:, :order.shape[0]] = order.T
    return values, indices


def _subset_partners(dense_a: np.ndarray, dense_b: np.ndarray, side_a: _Side, side_b: _Side,
                     top_k: int) -> _RawPartners:
    """Subset engine: Pearson of the densified used latents as one float64 product of z-scores."""
    z_a = (dense_a - side_a.mean[side_a.used_ids]) / side_a.std[side_a.used_ids]
    z_b = (dense_b - side_b.mean[side_b.used_ids]) / side_b.std[side_b.used_ids]
    corr = z_a.T @ z_b / side_a.n_tokens  # [n_used_a, n_used_b]
    values_b, indices_b = _top_k_rows(corr, top_k)
    values_a, indices_a = _top_k_rows(corr.T, top_k)
    return _RawPartners(values_b, indices_b, values_a, indices_a)


def _is_small_subset(device: str, latents_a: Any, latents_b: Any) -> bool:
    return (device == "auto" and latents_a is not None and latents_b is not None
            and max(len(latents_a), len(latents_b)) <= SUBSET_NUMPY_MAX_LATENTS)


# ---------------------------------------------------------------- engines


@dataclass
class _RawPartners:
    """Top-k lists in compact numbering (EMPTY_INDEX / -inf in unused slots)."""

    values_b: np.ndarray  # [n_used_b, k]
    indices_b: np.ndarray  # [n_used_b, k] compact A ids
    values_a: np.ndarray  # [n_used_a, k]
    indices_a: np.ndarray  # [n_used_a, k] compact B ids

    @classmethod
    def empty(cls, n_used_a: int, n_used_b: int, top_k: int) -> "_RawPartners":
        """No partners at all (one side has no latent that takes part)."""
        return cls(np.full((n_used_b, top_k), -np.inf), np.full((n_used_b, top_k), kernel.EMPTY_INDEX),
                   np.full((n_used_a, top_k), -np.inf), np.full((n_used_a, top_k), kernel.EMPTY_INDEX))


def _balanced_blocks(work: np.ndarray, n_blocks: int) -> tuple[np.ndarray, np.ndarray]:
    """Deal columns, most expensive first, round-robin into `n_blocks` blocks of similar total work."""
    order = np.argsort(-work, kind="stable")
    block_of = np.arange(order.size) % n_blocks
    by_block = order[np.argsort(block_of, kind="stable")]
    block_ptr = np.zeros(n_blocks + 1, np.int64)
    block_ptr[1:] = np.cumsum(np.bincount(block_of, minlength=n_blocks))
    return block_ptr, by_block.astype(np.int64)


def _sparse_partners(side_a: _Side, side_b: _Side, top_k: int) -> _RawPartners:
    """CPU engine: the numba kernel over A by token and B by latent (cost ~ sum_t nnz_a(t) nnz_b(t) + d_a d_b)."""
    n_threads = numba.get_num_threads()
    d_a, d_b = side_a.n_used, side_b.n_used
    work = np.diff(side_b.pointers) * (side_a.positions.size / side_a.n_tokens) + d_a
    n_rounds = max(1, min(16, d_b // max(1, 8 * n_threads)))  # kernel calls, for progress reporting
    n_blocks_per_round = 8 * n_threads
    block_ptr, block_columns = _balanced_blocks(work, n_rounds * n_blocks_per_round)
    mean_a, inv_std_a = side_a.mean[side_a.used_ids], 1.0 / side_a.std[side_a.used_ids]
    mean_b, inv_std_b = side_b.mean[side_b.used_ids], 1.0 / side_b.std[side_b.used_ids]
    top_values_b = np.full((d_b, top_k), -np.inf)
    top_indices_b = np.full((d_b, top_k), kernel.EMPTY_INDEX)
    thread_values_a = np.full((n_threads, d_a, top_k), -np.inf)
    thread_indices_a = np.full((n_threads, d_a, top_k), kernel.EMPTY_INDEX)
    thread_last_a = np.full((n_threads, d_a), -np.inf)
    cross = np.zeros((n_threads, d_a))
    previous_chunksize = numba.set_parallel_chunksize(1)  # blocks are handed out one at a time
    try:
        for r in tqdm(range(n_rounds), desc="correlate (sparse)", unit="round", disable=n_rounds < 2):
            lo, hi = r * n_blocks_per_round, (r + 1) * n_blocks_per_round
            kernel.top_partners(side_a.pointers, side_a.positions, side_a.values,
                                side_b.pointers, side_b.positions, side_b.values,
                                mean_a, inv_std_a, mean_b, inv_std_b, side_a.n_tokens,
                                block_ptr[lo:hi + 1], block_columns, top_values_b, top_indices_b,
                                thread_values_a, thread_indices_a, thread_last_a, cross)
    finally:
        numba.set_parallel_chunksize(previous_chunksize)
    values_a, indices_a = kernel.merge_thread_lists(thread_values_a, thread_indices_a)
    return _RawPartners(top_values_b, top_indices_b, values_a, indices_a)


def _coo_rows(indptr: np.ndarray) -> np.ndarray:
    return np.repeat(np.arange(indptr.size - 1, dtype=np.int64), np.diff(indptr))


def _dense_partners(side_a: _Side, side_b: _Side, top_k: int, device: Any, block_latents: int) -> _RawPartners:
    """Torch engine: float64 tiles Z_A^T Z_B (A densified per token chunk, B per latent block) on `device`.

    Used on a GPU for dense or moderately sparse codes; on CPU tensors it tests the same arithmetic.
    """
    import torch

    device = torch.device(device)
    n_tokens, d_a, d_b = side_a.n_tokens, side_a.n_used, side_b.n_used
    f64 = dict(dtype=torch.float64, device=device)
    rows_a = torch.as_tensor(_coo_rows(side_a.pointers), device=device)
    cols_a = torch.as_tensor(side_a.positions.astype(np.int64), device=device)
    vals_a = torch.as_tensor(side_a.values, **f64)
    colptr_b = side_b.pointers
    rows_b = torch.as_tensor(side_b.positions.astype(np.int64), device=device)
    cols_b = torch.as_tensor(_coo_rows(colptr_b), device=device)
    vals_b = torch.as_tensor(side_b.values, **f64)
    mean_a = torch.as_tensor(side_a.mean[side_a.used_ids], **f64)
    inv_std_a = 1.0 / torch.as_tensor(side_a.std[side_a.used_ids], **f64)
    mean_b = torch.as_tensor(side_b.mean[side_b.used_ids], **f64)
    inv_std_b = 1.0 / torch.as_tensor(side_b.std[side_b.used_ids], **f64)
    k_b, k_a = min(top_k, d_a), min(top_k, d_b)
    values_b = torch.full((d_b, top_k), -math.inf, **f64)
    indices_b = torch.full((d_b, top_k), kernel.EMPTY_INDEX, dtype=torch.int64, device=device)
    values_a = torch.full((d_a, k_a), -math.inf, **f64)
    indices_a = torch.full((d_a, k_a), kernel.EMPTY_INDEX, dtype=torch.int64, device=device)
    token_rows = int(max(1, min(n_tokens, DENSE_TILE_BYTES // (8 * max(d_a, 1)))))
    token_starts = torch.arange(0, n_tokens + 1, token_rows, device=device)
    indptr_a = side_a.pointers
    inv_n = 1.0 / n_tokens
    for start in tqdm(range(0, d_b, block_latents), desc="correlate (dense)", unit="block",
                      disable=d_b <= block_latents):
        stop = min(start + block_latents, d_b)
        lo, hi = int(colptr_b[start]), int(colptr_b[stop])
        order = torch.argsort(rows_b[lo:hi], stable=True)  # block entries by token
        block_rows, block_cols, block_vals = rows_b[lo:hi][order], cols_b[lo:hi][order] - start, vals_b[lo:hi][order]
        bounds = torch.searchsorted(block_rows, token_starts).tolist() + [hi - lo]
        cross = torch.zeros((d_a, stop - start), **f64)  # [d_a, block] sum_t a_ti b_tj
        for c, t0 in enumerate(range(0, n_tokens, token_rows)):
            b_lo, b_hi = bounds[c], bounds[c + 1]
            if b_lo == b_hi:
                continue  # no B entry in this chunk: its products are zero
            t1 = min(t0 + token_rows, n_tokens)
            a_lo, a_hi = int(indptr_a[t0]), int(indptr_a[t1])
            dense_a = torch.zeros((t1 - t0, d_a), **f64)  # [tokens, d_a]
            dense_a[rows_a[a_lo:a_hi] - t0, cols_a[a_lo:a_hi]] = vals_a[a_lo:a_hi]
            dense_b = torch.zeros((t1 - t0, stop - start), **f64)  # [tokens, block]
            dense_b[block_rows[b_lo:b_hi] - t0, block_cols[b_lo:b_hi]] = block_vals[b_lo:b_hi]
            cross.addmm_(dense_a.T, dense_b)
        covariance = cross * inv_n - mean_a[:, None] * mean_b[None, start:stop]
        corr = covariance * inv_std_a[:, None] * inv_std_b[None, start:stop]  # [d_a, block]
        best = torch.topk(corr, k_b, dim=0)
        values_b[start:stop, :k_b] = best.values.T
        indices_b[start:stop, :k_b] = best.indices.T
        block_ids = torch.arange(start, stop, device=device).expand(d_a, -1)
        merged = torch.topk(torch.cat([values_a, corr], dim=1), k_a, dim=1)
        values_a = merged.values
        indices_a = torch.gather(torch.cat([indices_a, block_ids], dim=1), 1, merged.indices)
    pad = torch.full((d_a, top_k - k_a), -math.inf, **f64)
    values_a = torch.cat([values_a, pad], dim=1)
    indices_a = torch.cat([indices_a, torch.full_like(pad, kernel.EMPTY_INDEX, dtype=torch.int64)], dim=1)
    raw = [t.cpu().numpy() for t in (values_b, indices_b, values_a, indices_a)]
    # torch.topk orders ties arbitrarily: restore (value desc, index asc) within each list
    for values, indices in ((raw[0], raw[1]), (raw[2], raw[3])):
        order = np.lexsort((indices, -values), axis=-1)
        values[:] = np.take_along_axis(values, order, axis=-1)
        indices[:] = np.take_along_axis(indices, order, axis=-1)
    return _RawPartners(*raw)


@functools.lru_cache(maxsize=None)
def _measure_fp64_flops(device: str) -> float:
    """Float64 matmul throughput of a torch device (one small timed product after a warm-up)."""
    import torch

    x = torch.ones((2048, 2048), dtype=torch.float64, device=device)
    (x @ x).sum().item()
    start = time.perf_counter()
    (x @ x @ x).sum().item()
    return 2 * 2 * 2048**3 / max(time.perf_counter() - start, 1e-9)


@dataclass(frozen=True)
class _EngineCosts:
    """Estimated seconds of the sparse kernel and of the dense CPU path, and the latter's extra memory (bytes)."""

    sparse_seconds: float
    dense_cpu_seconds: float
    dense_cpu_bytes: float


def _engine_costs(side_a: _Side, side_b: _Side, block_latents: int, torch_threads: int) -> _EngineCosts:
    """Cost model of the sparse kernel and of the dense torch path on CPU (constants measured above).

    sparse: (sum over tokens of nnz_a(t) * nnz_b(t) + d_a * d_b) / (SPARSE_PRODUCTS_PER_SECOND * threads);
    dense on CPU: 2 * n * d_a * d_b / (DENSE_CPU_FLOPS_PER_THREAD * torch threads)
                  + DENSE_CPU_SECONDS_PER_ENTRY * (n_blocks_b * nnz_a + nnz_b).
    For codes of density r_a, r_b the dense path wins once d_a r_a d_b r_b (co-firing per token) exceeds
    about 75 (d_a r_a + d_b r_b) on 2 threads, i.e. only for dense codes (r > ~0.5 at 256 x 384 latents).
    """
    n_tokens, d_a, d_b = side_a.n_tokens, side_a.n_used, side_b.n_used
    nnz_a, nnz_b = side_a.positions.size, side_b.positions.size
    tokens_b = np.bincount(side_b.positions, minlength=n_tokens).astype(np.float64)
    products = float(np.dot(np.diff(side_a.pointers).astype(np.float64), tokens_b))
    dense_pass = float(d_a) * d_b
    sparse_seconds = (products + dense_pass) / (SPARSE_PRODUCTS_PER_SECOND * numba.get_num_threads())
    n_blocks = max(1, math.ceil(d_b / block_latents))
    token_rows = max(1, min(n_tokens, DENSE_TILE_BYTES // (8 * max(d_a, 1))))
    tile_bytes = 8.0 * token_rows * (d_a + min(block_latents, d_b)) + 8.0 * dense_pass
    dense_cpu_seconds = (2.0 * n_tokens * dense_pass / (DENSE_CPU_FLOPS_PER_THREAD * max(1, torch_threads))
                         + DENSE_CPU_SECONDS_PER_ENTRY * (n_blocks * nnz_a + nnz_b))
    return _EngineCosts(sparse_seconds, dense_cpu_seconds, DENSE_CPU_BYTES_PER_ENTRY * (nnz_a + nnz_b) + tile_bytes)


def _torch_has_gpu_backend() -> bool:
    """Whether the installed torch is a CUDA or ROCm build, read from `torch/version.py` without importing torch
    (about 2 s of CPU per job): a CPU-only build never sees a GPU, so `auto` then needs torch only when the
    dense CPU path might win."""
    if "torch" in sys.modules:
        return bool(sys.modules["torch"].version.cuda or sys.modules["torch"].version.hip)
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return False
    version_file = os.path.join(next(iter(spec.submodule_search_locations)), "version.py")
    version_spec = importlib.util.spec_from_file_location("_featsim_torch_build", version_file)
    if not os.path.isfile(version_file) or version_spec is None or version_spec.loader is None:
        return True  # unknown build: ask torch itself
    build = importlib.util.module_from_spec(version_spec)
    version_spec.loader.exec_module(build)
    return bool(getattr(build, "cuda", None) or getattr(build, "hip", None))


def _choose_engine(device: str, side_a: _Side, side_b: _Side, block_latents: int = 4096) -> tuple[str, str]:
    """(engine, torch device) for `correlation.device`; auto takes the fastest engine by `_engine_costs`.

    On CPU, auto takes the dense torch path instead of the sparse kernel only for dense codes (MLP neurons,
    pre-activations), and only within DENSE_CPU_MAX_BYTES; on a GPU it weighs dense GPU tiles too.
    """
    if device == "cpu":
        return "sparse-cpu", "cpu"
    if device == "dense-cpu":
        return "dense-cpu", "cpu"
    if device != "auto" and not device.startswith("cuda"):
        raise ConfigError("correlation.device", f"{device!r} is not one of auto, cpu, cuda (or cuda:N)")
    if device == "auto" and not _torch_has_gpu_backend():
        bound = _engine_costs(side_a, side_b, block_latents, torch_threads=2**31)  # dense CPU on any thread count
        if bound.sparse_seconds <= bound.dense_cpu_seconds or bound.dense_cpu_bytes > DENSE_CPU_MAX_BYTES:
            log.info("correlation engine estimate: sparse-cpu %.1f s, dense-cpu >= %.1f s (dense CPU needs %.1f GB); "
                     "using sparse-cpu", bound.sparse_seconds, bound.dense_cpu_seconds, bound.dense_cpu_bytes / 2**30)
            return "sparse-cpu", "cpu"
    import torch

    cuda = torch.cuda.is_available()
    if device != "auto":
        if not cuda:
            raise ConfigError("correlation.device", f"{device!r} was requested but no CUDA GPU is visible; "
                                                    "use auto or cpu")
        return "dense-cuda", device
    costs = _engine_costs(side_a, side_b, block_latents, torch.get_num_threads())
    seconds = {"sparse-cpu": costs.sparse_seconds}
    if costs.dense_cpu_bytes <= DENSE_CPU_MAX_BYTES:
        seconds["dense-cpu"] = costs.dense_cpu_seconds
    if cuda:
        dense_flops = 2.0 * side_a.n_tokens * float(side_a.n_used) * side_b.n_used
        seconds["dense-cuda"] = dense_flops / _measure_fp64_flops("cuda")
    engine = min(seconds, key=seconds.get)  # ties keep the sparse kernel (inserted first)
    log.info("correlation engine estimate: %s (dense CPU needs %.1f GB); using %s",
             ", ".join(f"{name} {value:.1f} s" for name, value in seconds.items()), costs.dense_cpu_bytes / 2**30,
             engine)
    return engine, {"sparse-cpu": "cpu", "dense-cpu": "cpu", "dense-cuda": "cuda"}[engine]


# ---------------------------------------------------------------- public API


def _warn_if_ill_conditioned(side_a: _Side, side_b: _Side) -> None:
    """Log the worst pair whose uncentred covariance may lose digits (nearly constant latents)."""
    if side_a.n_used == 0 or side_b.n_used == 0:
        return
    ratio_a = np.abs(side_a.mean[side_a.used_ids]) / side_a.std[side_a.used_ids]
    ratio_b = np.abs(side_b.mean[side_b.used_ids]) / side_b.std[side_b.used_ids]
    if ratio_a.max() * ratio_b.max() > ILL_CONDITIONED:
        log.warning("latents A%d and B%d are nearly constant (|mean/std| = %.3g, %.3g): their correlations "
                    "may carry absolute errors up to ~%.1g", side_a.used_ids[ratio_a.argmax()],
                    side_b.used_ids[ratio_b.argmax()], ratio_a.max(), ratio_b.max(),
                    1e-16 * ratio_a.max() * ratio_b.max())


def _to_original(raw_values: np.ndarray, raw_indices: np.ndarray, partner_ids: np.ndarray, own: _Side,
                 width: int, top_k: int) -> tuple[np.ndarray, np.ndarray]:
    """Full-width [width, k] lists in original numbering: -1 / NaN for unused rows and empty slots."""
    indices = np.full((width, top_k), -1, np.int64)
    values = np.full((width, top_k), np.nan)
    filled = raw_indices != kernel.EMPTY_INDEX
    mapped = np.full(raw_indices.shape, -1, np.int64)
    mapped[filled] = partner_ids[raw_indices[filled]]
    indices[own.used_ids] = mapped
    values[own.used_ids] = np.where(filled, np.clip(raw_values, -1.0, 1.0), np.nan)
    return indices, values


def _side_rows(rows: Any, n_tokens_a: int, n_tokens_b: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The row selection of each side: one bool mask for both (codes of one token store), or the two index
    arrays of aligned row pairs (codes of two tokenizations)."""
    if isinstance(rows, RowPairs):
        if len(rows) == 0:
            raise ValueError("the aligned row pairs are empty: nothing to correlate")
        return np.asarray(rows.a, np.int64), np.asarray(rows.b, np.int64)
    if n_tokens_a != n_tokens_b:
        raise ValueError(f"codes_a has {n_tokens_a} token rows but codes_b has {n_tokens_b}: both must be codes "
                         "of the same tokens (rebuild the code stores from one tokens.zarr), or of two token stores "
                         "correlated on aligned rows (rows=featsim.alignment.RowPairs)")
    if n_tokens_a == 0:
        raise ValueError("codes hold no token rows: nothing to correlate")
    if rows is None:
        return None, None
    rows = np.asarray(rows)
    if not rows.any():
        raise ValueError("rows selects no token row: nothing to correlate")
    return rows, rows


def max_correlation(codes_a: Any, codes_b: Any, *, top_k: int = CorrelationConfig.top_k,
                    min_active: int = CorrelationConfig.min_active, device: str = CorrelationConfig.device,
                    latents_a: Sequence[int] | np.ndarray | None = None,
                    latents_b: Sequence[int] | np.ndarray | None = None,
                    block_latents: int = CorrelationConfig.block_latents, rows: Any = None) -> CorrelationResult:
    """Exact Pearson correlation of A and B latents over the shared token rows; top-k partners both ways.

    `codes_a` / `codes_b`: scipy.sparse (or dense) matrices [tokens, latents] with the same token rows, or
    `featsim.stores.CodesStore`s (streamed chunk by chunk). `latents_a` / `latents_b` restrict both sides
    to subsets (results keep the original numbering). `device`: auto (the engine estimated fastest, see
    `_choose_engine`; latent subsets of at most SUBSET_NUMPY_MAX_LATENTS per side are correlated densely
    in numpy) | cpu (sparse numba kernel) | cuda[:N] (dense torch tiles) | dense-cpu (the dense
    arithmetic on CPU tensors: faster than the sparse kernel for dense codes).
    `block_latents`: B latents per tile on the dense path. `rows`: a bool mask over the token rows to
    correlate over (e.g. `featsim.split.TokenSplit.pair_rows`); default all. For codes of two tokenizations
    (different row counts), `rows` is a `featsim.alignment.RowPairs`: row a[i] of codes_a is correlated with
    row b[i] of codes_b (the rows are gathered, then the same exact engines run).
    """
    if top_k < 1:
        raise ConfigError("correlation.top_k", f"must be >= 1, got {top_k}")
    if min_active < 1:
        raise ConfigError("correlation.min_active", f"must be >= 1, got {min_active}")
    if block_latents < 1:
        raise ConfigError("correlation.block_latents", f"must be >= 1, got {block_latents}")
    rows_a, rows_b = _side_rows(rows, _shape(codes_a)[0], _shape(codes_b)[0])
    started = time.perf_counter()
    value_dtype = np.promote_types(_value_dtype(codes_a), _value_dtype(codes_b))
    if _is_small_subset(device, latents_a, latents_b):
        side_a, dense_a = _load_subset_side(codes_a, latents_a, min_active, value_dtype, "latents_a", rows_a)
        side_b, dense_b = _load_subset_side(codes_b, latents_b, min_active, value_dtype, "latents_b", rows_b)
        engine, torch_device = "subset-numpy", None
    else:
        side_a = _load_side(codes_a, latents_a, min_active, value_dtype, "latents_a", by_latent=False, rows=rows_a)
        side_b = _load_side(codes_b, latents_b, min_active, value_dtype, "latents_b", by_latent=True, rows=rows_b)
        engine, torch_device = _choose_engine(device, side_a, side_b, block_latents)
    loaded = time.perf_counter()
    _warn_if_ill_conditioned(side_a, side_b)
    if side_a.n_used == 0 or side_b.n_used == 0:
        raw = _RawPartners.empty(side_a.n_used, side_b.n_used, top_k)
    elif engine == "subset-numpy":
        raw = _subset_partners(dense_a, dense_b, side_a, side_b, top_k)
    elif engine == "sparse-cpu":
        raw = _sparse_partners(side_a, side_b, top_k)
    else:
        raw = _dense_partners(side_a, side_b, top_k, torch_device, block_latents)
    topk_a_for_b, topk_corr_for_b = _to_original(raw.values_b, raw.indices_b, side_a.used_ids, side_b,
                                                 side_b.used.size, top_k)
    topk_b_for_a, topk_corr_for_a = _to_original(raw.values_a, raw.indices_a, side_b.used_ids, side_a,
                                                 side_a.used.size, top_k)
    result = CorrelationResult(topk_a_for_b, topk_corr_for_b, topk_b_for_a, topk_corr_for_a,
                               side_a.n_active, side_a.mean, side_a.std, side_b.n_active, side_b.mean, side_b.std,
                               side_a.subset, side_b.subset, side_a.used, side_b.used,
                               n_tokens=side_a.n_tokens, min_active=int(min_active), top_k=int(top_k), engine=engine)
    log.info("correlated %d tokens x %d A x %d B latents (%d / %d used; %d / %d excluded, min_active=%d) "
             "with %s: load %.1f s, correlate %.1f s", result.n_tokens, result.d_a, result.d_b, side_a.n_used,
             side_b.n_used, result.n_excluded_a, result.n_excluded_b, min_active, engine, loaded - started,
             time.perf_counter() - loaded)
    return result
