"""Multiple-testing adjustment of permutation p-values across one family of cells.

The family is the layer grid of one (comparison, pairing, metric) (featsim.summary forms it).
Holm (default) controls the family-wise error rate under any dependence between the tests, which
matters here because every cell of a grid shares decoders with its neighbours; Benjamini-Hochberg
controls the false-discovery rate (valid under independence or positive dependence).
"""

from __future__ import annotations

import numpy as np

METHODS = ("holm", "bh")


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
