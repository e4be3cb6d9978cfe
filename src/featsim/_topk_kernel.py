"""numba kernel of the labels stage: one pass over a CSR chunk updates per-latent statistics and top-k heaps.

A module of its own so that only the labels stage pays numba's import and cache load (~0.5 s a process).
Order of the top-k: value descending, then row ascending (the earlier row wins a tie), exactly what a
stable descending sort of each latent's column gives; the comparison uses only float32 values and
integer rows, so the result is the same on every machine.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, inline="always")
def _worse(value_a, row_a, value_b, row_b):  # pragma: no cover - compiled
    """True when entry a ranks below entry b (smaller value, or an equal value at a later row)."""
    return value_a < value_b or (value_a == value_b and row_a > row_b)


@numba.njit(cache=True)
def _sift_down(values, rows, size, start):  # pragma: no cover - compiled
    """Restore the min-heap (worst entry at 0) below `start` for one latent's heap of `size` entries."""
    parent = start
    while True:
        child = 2 * parent + 1
        if child >= size:
            return
        if child + 1 < size and _worse(values[child + 1], rows[child + 1], values[child], rows[child]):
            child += 1
        if not _worse(values[child], rows[child], values[parent], rows[parent]):
            return
        values[parent], values[child] = values[child], values[parent]
        rows[parent], rows[child] = rows[child], rows[parent]
        parent = child


@numba.njit(cache=True)
def offer_chunk(indptr, indices, values, row_ids, heap_values, heap_rows, heap_size,
                n_stored, n_active, chunk_sum_all, chunk_sum_active, max_stored):  # pragma: no cover - compiled
    """Offer every stored entry of a CSR chunk (rows in ascending `row_ids`) to the per-latent heaps.

    Counts and maxima accumulate across chunks; the float64 sums go to the chunk's own arrays in entry
    order (the caller adds them to the totals), which is bit for bit what np.bincount per chunk gives.
    Only values > 0 enter a heap; a full heap takes a value only above its worst (ties go to the earlier row,
    which is already held since rows arrive in ascending order).
    """
    k = heap_values.shape[1]
    for r in range(indptr.size - 1):
        row = row_ids[r]
        for e in range(indptr[r], indptr[r + 1]):
            column = indices[e]
            value = values[e]
            wide = np.float64(value)
            n_stored[column] += 1
            chunk_sum_all[column] += wide
            if wide > max_stored[column]:
                max_stored[column] = wide
            if value > 0:
                n_active[column] += 1
                chunk_sum_active[column] += wide
                size = heap_size[column]
                if size < k:
                    # sift up the new entry from the end
                    child = size
                    heap_values[column, child] = value
                    heap_rows[column, child] = row
                    while child > 0:
                        parent = (child - 1) // 2
                        if not _worse(heap_values[column, child], heap_rows[column, child],
                                      heap_values[column, parent], heap_rows[column, parent]):
                            break
                        heap_values[column, child], heap_values[column, parent] = \
                            heap_values[column, parent], heap_values[column, child]
                        heap_rows[column, child], heap_rows[column, parent] = \
                            heap_rows[column, parent], heap_rows[column, child]
                        child = parent
                    heap_size[column] = size + 1
                elif value > heap_values[column, 0]:
                    heap_values[column, 0] = value
                    heap_rows[column, 0] = row
                    _sift_down(heap_values[column], heap_rows[column], k, 0)


@numba.njit(cache=True)
def sort_heaps(heap_values, heap_rows, heap_size):  # pragma: no cover - compiled
    """Each latent's held entries best first (value descending, row ascending); -inf / -1 after them."""
    n_columns, k = heap_values.shape
    for column in range(n_columns):
        size = heap_size[column]
        values = heap_values[column]
        rows = heap_rows[column]
        for i in range(1, size):  # insertion sort: k is small
            value, row = values[i], rows[i]
            j = i - 1
            while j >= 0 and _worse(values[j], rows[j], value, row):
                values[j + 1], rows[j + 1] = values[j], rows[j]
                j -= 1
            values[j + 1], rows[j + 1] = value, row
        for i in range(size, k):
            values[i] = -np.inf
            rows[i] = -1
