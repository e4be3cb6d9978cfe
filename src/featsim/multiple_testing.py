"""Multiple-testing adjustment of permutation p-values across one family of cells.

The family is the layer grid of one (comparison, pairing, metric) (featsim.summary forms it).
Holm (default) controls the family-wise error rate under any dependence between the tests, which
matters here because every cell of a grid shares decoders with its neighbours; Benjamini-Hochberg
controls the false-discovery rate (valid under independence or positive dependence).
"""

from __future__ import annotations

import math

import numpy as np

METHODS = ("holm", "bh")

DEFAULT_ALPHA = 0.05
"""Significance level of adjusted p (config `alpha`): a cell is significant when p_adjusted < alpha."""

STATUSES = ("scored", "not_scored", "underpowered")
"""A cell's status: scored; not_scored (no meaningful score: `reason` says why, no p); underpowered
(it has a p, but its smallest attainable adjusted p is not below alpha: it can never be significant)."""

WITH_P = ("scored", "underpowered")
"""Statuses of cells that have a p-value and belong to their multiple-testing family."""


def adjust_pvalues(p_values, method: str = "holm") -> np.ndarray:
    """Adjusted p-values, same shape as `p_values`; NaN entries (cells not scored) stay NaN and
    are left out of the family.

    holm: p_(i) -> max_{j <= i} min(1, (m - j + 1) p_(j)) over the ascending order.
    bh:   p_(i) -> min_{j >= i} min(1, m p_(j) / j).
    """
    if method not in METHODS:
        raise ValueError(f"config key 'correction': {method!r} is not one of {METHODS}")
    p_values = np.asarray(p_values, dtype=np.float64)
    finite = ~np.isnan(p_values)
    values = p_values[finite]
    if values.size and ((values < 0).any() or (values > 1).any()):
        raise ValueError(f"p-values must lie in [0, 1], got range [{values.min()}, {values.max()}]")
    adjusted = np.full(p_values.shape, np.nan)
    m = values.size
    if m == 0:
        return adjusted
    order = np.argsort(values, kind="stable")
    ranked = values[order]
    ranks = np.arange(1, m + 1)
    if method == "holm":
        stepped = np.maximum.accumulate(np.minimum(1.0, (m - ranks + 1) * ranked))
    else:
        stepped = np.minimum.accumulate(np.minimum(1.0, m * ranked / ranks)[::-1])[::-1]
    in_order = np.empty(m)
    in_order[order] = stepped
    adjusted[finite] = in_order
    return adjusted


def smallest_adjusted_p(p_min, method: str = "holm") -> np.ndarray:
    """Smallest adjusted p each cell of a family can reach, from each cell's smallest raw p (p_min).

    Holm and BH adjusted p are non-decreasing in every raw p, and no raw p is below its p_min, so the
    adjustment of the p_min vector bounds every attainable outcome: with a common floor 1/(m+1) and
    M cells, Holm gives min(1, M/(m+1)). NaN entries stay out of the family, as in `adjust_pvalues`.
    """
    return adjust_pvalues(p_min, method)


def underpowered_reason(p_min: float, alpha: float, n_pairs: int, n_permutations: int,
                        p_min_adjusted: float | None = None, correction: str = "holm", family_size: int = 1) -> str:
    """Why a cell cannot be significant: its smallest attainable p (raw `p_min`, or adjusted within its
    family when `p_min_adjusted` is given) is not below alpha."""
    exact = n_pairs <= 20 and math.factorial(n_pairs) <= n_permutations + 1
    source = f"1/n! for n = {n_pairs} pairs" if exact else f"1/(m+1) for m = {n_permutations} permutations"
    if p_min_adjusted is None:
        return f"smallest attainable p is {p_min:.3g} ({source}) >= alpha {alpha:g}: it cannot be significant"
    return (f"smallest attainable {correction}-adjusted p is {p_min_adjusted:.3g} >= alpha {alpha:g} "
            f"(raw floor {p_min:.3g} = {source}; family of {family_size} cells): it cannot be significant")
