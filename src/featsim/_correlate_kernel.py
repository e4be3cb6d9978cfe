"""Compiled kernels of the exact sparse correlation engine (used by `featsim.correlate`).

Hand-written with numba rather than built from scipy sparse products because a tiled scipy prototype
took 117 s / 2.4 GB for ONE direction at 1M tokens x 32,768 x 32,768 latents, against a target of
15 s / 4 GB for both directions with top-k partners (`benchmarks/correlation.py`).

Top-k lists are ordered by (correlation descending, partner index ascending); unused slots hold
-inf and `EMPTY_INDEX`, which sort after every real entry.
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import binding as llvm_binding
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

EMPTY_INDEX = np.iinfo(np.int64).max  # partner slot not (yet) filled
PREFETCH_FAR = 16  # B entries ahead whose A row start is prefetched
PREFETCH_NEAR = 8  # B entries ahead whose A row is prefetched


@njit(cache=True)
def column_stats(indices, values, n_cols, n_rows):
    """Per column over all `n_rows` rows (zeros included): nonzero count, mean, population std.

    The variance is the centred two-pass sum, sum_active (x - mean)^2 + n_inactive * mean^2, so a
    constant offset does not cancel catastrophically as in E[x^2] - mean^2.
    """
    counts = np.zeros(n_cols, np.int64)
    sums = np.zeros(n_cols, np.float64)
    for p in range(indices.size):
        value = np.float64(values[p])
        if value != 0.0:
            counts[indices[p]] += 1
            sums[indices[p]] += value
    means = sums / n_rows
    centred = np.zeros(n_cols, np.float64)
    for p in range(indices.size):
        value = np.float64(values[p])
        if value != 0.0:
            deviation = value - means[indices[p]]
            centred[indices[p]] += deviation * deviation
    for c in range(n_cols):
        centred[c] += (n_rows - counts[c]) * means[c] * means[c]
    return counts, means, np.sqrt(centred / n_rows)


@njit(cache=True)
def has_duplicates(indptr, indices, n_cols):
    """True if some row stores the same column twice (scipy allows it; the kernels need sums)."""
    last_row = np.full(n_cols, -1, np.int64)
    for row in range(indptr.size - 1):
        for p in range(indptr[row], indptr[row + 1]):
            if last_row[indices[p]] == row:
                return True
            last_row[indices[p]] = row
    return False


@njit(cache=True)
def compact_csr(indptr, indices, values, column_map, new_indptr, new_indices, new_values):
    """Fill CSR arrays without explicit zeros and columns with `column_map[c] < 0`, the rest renumbered.

    Outputs are allocated by the caller (numpy backs large arrays with huge pages: fewer TLB misses).
    """
    write = 0
    new_indptr[0] = 0
    for row in range(indptr.size - 1):
        for p in range(indptr[row], indptr[row + 1]):
            new_col = column_map[indices[p]]
            if new_col >= 0 and values[p] != 0:
                new_indices[write] = new_col
                new_values[write] = values[p]
                write += 1
        new_indptr[row + 1] = write


@njit(cache=True)
def compact_csc(indptr, indices, values, column_map, colptr, rows, col_values):
    """Fill CSC arrays (rows ascending per column) of the kept columns of a CSR matrix, renumbered by
    `column_map`, explicit zeros dropped; `colptr` [n_kept + 1] is given (from the kept counts)."""
    fill = colptr[:-1].copy()
    for row in range(indptr.size - 1):
        for p in range(indptr[row], indptr[row + 1]):
            new_col = column_map[indices[p]]
            if new_col >= 0 and values[p] != 0:
                dest = fill[new_col]
                rows[dest] = row
                col_values[dest] = values[p]
                fill[new_col] = dest + 1


def _prefetch_intrinsic_name() -> str:
    # LLVM >= 17 (opaque pointers) mangles the pointer argument as p0, older releases as p0i8
    return "llvm.prefetch.p0" if llvm_binding.llvm_version_info[0] >= 17 else "llvm.prefetch.p0i8"


@intrinsic
def prefetch(typingctx, array, index):
    """Hint the CPU to fetch `array[index]` into cache (no fault, no effect on results)."""
    signature = types.void(array, index)

    def codegen(context, builder, sig, args):
        array_type = sig.args[0]
        array_struct = context.make_array(array_type)(context, builder, args[0])
        pointer = cgutils.get_item_pointer(context, builder, array_type, array_struct, [args[1]],
                                           wraparound=False)
        byte_pointer = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        function = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [byte_pointer, i32, i32, i32]),
            _prefetch_intrinsic_name())
        builder.call(function, [builder.bitcast(pointer, byte_pointer), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return signature, codegen


@njit(cache=True, inline="always")
def _insert(top_values, top_indices, value, index):
    """Insert (value, index) into a list sorted by (value desc, index asc); the last entry drops out.

    The caller has checked that the candidate beats the current last entry.
    """
    pos = top_values.size - 1
    while pos > 0 and (top_values[pos - 1] < value
                       or (top_values[pos - 1] == value and top_indices[pos - 1] > index)):
        top_values[pos] = top_values[pos - 1]
        top_indices[pos] = top_indices[pos - 1]
        pos -= 1
    top_values[pos] = value
    top_indices[pos] = index


@njit(cache=True, parallel=True)
def top_partners(indptr_a, cols_a, values_a, colptr_b, rows_b, values_b,
                 mean_a, inv_std_a, mean_b, inv_std_b, n_rows, block_ptr, block_columns,
                 top_values_b, top_indices_b, thread_values_a, thread_indices_a, thread_last_a, cross):
    """Update top-k partners in both directions for the B columns listed in the blocks.

    A is by token (CSR), B by latent (CSC). For each B column j (blocks of columns run in parallel):
    scatter the co-firing products u * v into a dense float64 row over A (the cross moment
    S_ij = sum_t a_ti b_tj), turn the whole row into correlations
    r_i = (S_ij / N - mean_a_i mean_b_j) / (std_a_i std_b_j) -- exact for pairs that never co-fire too
    (S_ij = 0) -- keep j's top-k in `top_*_b[j]` ([d_b, k]), offer every r_i to latent i's list in the
    calling thread's `thread_*_a[tid]` ([n_threads, d_a, k]; `thread_last_a` [n_threads, d_a] mirrors
    each list's last value for a contiguous test; merged by `merge_thread_lists`), and reset the row.
    `cross` [n_threads, d_a] holds the rows; it must be zero on entry and is zero on exit.
    """
    d_a = mean_a.size
    top_k = top_values_b.shape[1]
    inv_n = 1.0 / n_rows
    n_entries_b = rows_b.size
    last_a_entry = max(cols_a.size - 1, 0)
    for block in prange(block_ptr.size - 1):
        tid = numba.get_thread_id()
        row = cross[tid]
        values_a_lists = thread_values_a[tid]
        indices_a_lists = thread_indices_a[tid]
        last_a = thread_last_a[tid]
        for pos in range(block_ptr[block], block_ptr[block + 1]):
            j = block_columns[pos]
            for p in range(colptr_b[j], colptr_b[j + 1]):
                # the A rows are scattered over memory: prefetch the row start, then the row,
                # a few B entries ahead (about halves the scatter time at 1M tokens)
                if p + PREFETCH_FAR < n_entries_b:
                    prefetch(indptr_a, rows_b[p + PREFETCH_FAR])
                if p + PREFETCH_NEAR < n_entries_b:
                    ahead = indptr_a[rows_b[p + PREFETCH_NEAR]]
                    prefetch(cols_a, min(ahead, last_a_entry))
                    prefetch(values_a, min(ahead, last_a_entry))
                    prefetch(cols_a, min(ahead + 16, last_a_entry))
                    prefetch(values_a, min(ahead + 16, last_a_entry))
                token = rows_b[p]
                value_b = np.float64(values_b[p])
                for q in range(indptr_a[token], indptr_a[token + 1]):
                    row[cols_a[q]] += values_a[q] * value_b
            # the whole row -> correlations (one fused pass; keeping it inline here, not in a helper
            # function, measured 8x faster), offered to both directions' lists; the row is reset
            mean_j = mean_b[j]
            inv_std_j = inv_std_b[j]
            best_values = top_values_b[j]
            best_indices = top_indices_b[j]
            threshold_b = best_values[top_k - 1]
            for i in range(d_a):
                value = (row[i] * inv_n - mean_a[i] * mean_j) * inv_std_a[i] * inv_std_j
                row[i] = 0.0
                if value > threshold_b:
                    _insert(best_values, best_indices, value, i)
                    threshold_b = best_values[top_k - 1]
                if value >= last_a[i]:
                    if value > last_a[i] or j < indices_a_lists[i, top_k - 1]:
                        _insert(values_a_lists[i], indices_a_lists[i], value, j)
                        last_a[i] = values_a_lists[i, top_k - 1]


@njit(cache=True, parallel=True)
def merge_thread_lists(thread_values, thread_indices):
    """Merge per-thread top-k lists [n_threads, d, k] into one [d, k] list per row, same order rule."""
    n_threads, n_rows, top_k = thread_values.shape
    values = np.full((n_rows, top_k), -np.inf)
    indices = np.full((n_rows, top_k), EMPTY_INDEX)
    for r in prange(n_rows):
        for t in range(n_threads):
            for m in range(top_k):
                value = thread_values[t, r, m]
                index = thread_indices[t, r, m]
                last = values[r, top_k - 1]
                if value > last or (value == last and index < indices[r, top_k - 1]):
                    _insert(values[r], indices[r], value, index)
    return values, indices
