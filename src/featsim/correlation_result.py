"""The result of the correlation stage and its Zarr store: top-k partners both ways plus per-latent stats.

Kept apart from `featsim.correlate` (the engines) so that readers of correlation stores, such as the
pairing jobs, do not import numba.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from featsim.stores import atomic_store, check_arrays, create_checked_array, damaged, open_store, read_checked, recorded


@dataclass
class CorrelationResult:
    """Top-k partners in both directions plus per-latent statistics, in the original latent numbering.

    Rows of latents that did not take part (outside a requested subset, or excluded) hold index -1 and
    value NaN. Top-k rows are sorted by correlation descending, ties by partner index ascending.
    """

    topk_a_for_b: np.ndarray  # [d_b, k] int64 A partners of each B latent
    topk_corr_for_b: np.ndarray  # [d_b, k] float64
    topk_b_for_a: np.ndarray  # [d_a, k] int64 B partners of each A latent
    topk_corr_for_a: np.ndarray  # [d_a, k] float64
    n_active_a: np.ndarray  # [d_a] int64 tokens where the latent is nonzero
    mean_a: np.ndarray  # [d_a] float64 over all tokens
    std_a: np.ndarray  # [d_a] float64 population std over all tokens
    n_active_b: np.ndarray  # [d_b]
    mean_b: np.ndarray  # [d_b]
    std_b: np.ndarray  # [d_b]
    subset_a: np.ndarray  # [d_a] bool: in the requested subset (all True without one)
    subset_b: np.ndarray  # [d_b] bool
    used_a: np.ndarray  # [d_a] bool: in the subset, fired on >= min_active tokens, nonzero variance
    used_b: np.ndarray  # [d_b] bool
    n_tokens: int
    min_active: int
    top_k: int
    engine: str

    @property
    def best_a_for_b(self) -> np.ndarray:
        return self.topk_a_for_b[:, 0]

    @property
    def best_corr_for_b(self) -> np.ndarray:
        return self.topk_corr_for_b[:, 0]

    @property
    def best_b_for_a(self) -> np.ndarray:
        return self.topk_b_for_a[:, 0]

    @property
    def best_corr_for_a(self) -> np.ndarray:
        return self.topk_corr_for_a[:, 0]

    @property
    def d_a(self) -> int:
        return int(self.n_active_a.size)

    @property
    def d_b(self) -> int:
        return int(self.n_active_b.size)

    @property
    def n_excluded_a(self) -> int:
        """Latents of the subset left out for firing on < min_active tokens or having zero variance."""
        return int(np.count_nonzero(self.subset_a & ~self.used_a))

    @property
    def n_excluded_b(self) -> int:
        return int(np.count_nonzero(self.subset_b & ~self.used_b))

    def summary(self) -> dict:
        """Small JSON-ready description for logs and store attrs."""
        return {"n_tokens": self.n_tokens, "d_a": self.d_a, "d_b": self.d_b, "top_k": self.top_k,
                "min_active": self.min_active, "engine": self.engine,
                "n_subset_a": int(self.subset_a.sum()), "n_subset_b": int(self.subset_b.sum()),
                "n_used_a": int(self.used_a.sum()), "n_used_b": int(self.used_b.sum()),
                "n_excluded_a": self.n_excluded_a, "n_excluded_b": self.n_excluded_b,
                "n_dead_a": int(np.count_nonzero(self.n_active_a == 0)),
                "n_dead_b": int(np.count_nonzero(self.n_active_b == 0))}


ARRAY_FIELDS = ("topk_a_for_b", "topk_corr_for_b", "topk_b_for_a", "topk_corr_for_a", "n_active_a", "mean_a",
                 "std_a", "n_active_b", "mean_b", "std_b", "subset_a", "subset_b", "used_a", "used_b")
SCALAR_FIELDS = ("n_tokens", "min_active", "top_k", "engine")


def write_correlation(path: str | os.PathLike, result: CorrelationResult, attrs: dict | None = None) -> None:
    """Write a CorrelationResult as a `correlation` store (arrays + summary and provenance in attrs)."""
    with atomic_store(path, kind="correlation", attrs={**result.summary(), **(attrs or {})}) as group:
        for name in ARRAY_FIELDS:
            array = getattr(result, name)
            create_checked_array(group, name, data=array, chunks=array.shape if array.size else None)


def _expected_arrays(d_a: int, d_b: int, top_k: int) -> dict[str, tuple[tuple[int, ...], type | None]]:
    shapes = {"topk_a_for_b": (d_b, top_k), "topk_corr_for_b": (d_b, top_k), "topk_b_for_a": (d_a, top_k),
              "topk_corr_for_a": (d_a, top_k)}
    for side, width in (("a", d_a), ("b", d_b)):
        shapes.update({f"{name}_{side}": (width,) for name in ("n_active", "mean", "std", "subset", "used")})
    dtypes = {"topk_a_for_b": np.int64, "topk_b_for_a": np.int64, "subset_a": np.bool_, "subset_b": np.bool_,
              "used_a": np.bool_, "used_b": np.bool_}
    return {name: (shapes[name], dtypes.get(name)) for name in ARRAY_FIELDS}


def _check_values(path: Path, arrays: dict[str, np.ndarray], d_a: int, d_b: int) -> None:
    """Partner ids in [-1, d_partner), correlations in [-1, 1] or NaN, statistics finite."""
    def bad(problem: str) -> None:
        raise damaged(path, "correlation", problem)

    for name, width in (("topk_a_for_b", d_a), ("topk_b_for_a", d_b)):
        ids = arrays[name]
        if ids.size and (ids.min() < -1 or ids.max() >= width):
            bad(f"'{name}' holds partner ids outside [-1, {width})")
    for name in ("topk_corr_for_b", "topk_corr_for_a"):
        values = arrays[name]
        if np.any(np.abs(values[~np.isnan(values)]) > 1):
            bad(f"'{name}' holds correlations outside [-1, 1]")
    for name in ("mean_a", "std_a", "mean_b", "std_b", "n_active_a", "n_active_b"):
        if not np.isfinite(arrays[name]).all():
            bad(f"'{name}' holds NaN or inf")


def open_correlation(path: str | os.PathLike) -> CorrelationResult:
    """Read a correlation store written by `write_correlation`, checking shapes, dtypes and value ranges."""
    path = Path(path)
    group = open_store(path, kind="correlation")
    d_a, d_b, top_k = (int(recorded(path, group, "correlation", key)) for key in ("d_a", "d_b", "top_k"))
    check_arrays(path, group, "correlation", _expected_arrays(d_a, d_b, top_k))
    arrays = {name: read_checked(path, group, "correlation", name, ...) for name in ARRAY_FIELDS}
    _check_values(path, arrays, d_a, d_b)
    scalars = {name: recorded(path, group, "correlation", name) for name in SCALAR_FIELDS}
    return CorrelationResult(**arrays, **{k: (v if k == "engine" else int(v)) for k, v in scalars.items()})
