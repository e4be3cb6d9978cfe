"""The report's first answer: does featsim see shared concepts? Every statistic for X and Y side by side.

For each configured contrast (X, Y) (config `comparisons.X.contrast`), one row per statistic: each
whole-space metric and concept-subspace metric (per pairing), concept agreement (CA), concept recall, and
the contrast tests (McNemar or recall permutation, difference-in-differences on best correlation). A
statistic *separates* X from Y when it tells them apart in every matched layer cell: for statistics of one
comparison against its own null, X is significant and Y is not; for the tests between them, the test
favours X significantly (adjusted p < alpha, positive statistic). `partly`: in some cells; `no`: none;
`n/a`: a descriptive number without a test; `not scored`: X has no cell with a p-value (the reason is
in `note`).
"""

from __future__ import annotations

import html
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from featsim.multiple_testing import DEFAULT_ALPHA, WITH_P

CELL = ["layer_a", "layer_b"]
COLUMNS = ["x", "y", "scope", "statistic", "pairing", "n_cells", "value_x", "value_y", "null_x", "null_y",
           "significant_x", "significant_y", "separates", "max_p_adjusted", "note"]
COLUMN_DOCS = {
    "x": "the comparison that should show shared concepts (e.g. main)",
    "y": "the comparison it is contrasted with (e.g. control)",
    "scope": "whole-space, concept-subspace or concept-evidence statistic",
    "statistic": "the statistic compared",
    "pairing": "pairing variant",
    "n_cells": "layer cells compared",
    "value_x": "median value over cells in x", "value_y": "median value over cells in y",
    "null_x": "median null mean in x", "null_y": "median null mean in y",
    "significant_x": "cells significant in x", "significant_y": "cells significant in y",
    "separates": "yes / partly / no: whether the statistic tells x from y in every cell",
    "max_p_adjusted": "largest adjusted p of the contrast over cells (tests between comparisons)",
    "note": "what the statistic can and cannot show",
}


def _verdict(n_separating: int, n_cells: int) -> str:
    if n_cells == 0:
        return "n/a"
    return "yes" if n_separating == n_cells else ("partly" if n_separating else "no")


def _median(values) -> float:
    values = pd.to_numeric(pd.Series(values), errors="coerce").dropna()
    return float(values.median()) if len(values) else float("nan")


def _own_null_rows(table_x: pd.DataFrame, table_y: pd.DataFrame, keys: Sequence[str], value: str, null: str,
                   significant) -> dict:
    """Median value/null of X and Y and how many matched cells have X significant and Y not."""
    merged = table_x.merge(table_y, on=list(keys), suffixes=("_x", "_y"))
    sig_x = significant(table_x)
    sig_y = significant(table_y)
    merged_sig_x = significant(merged, "_x")
    merged_sig_y = significant(merged, "_y")
    separating = int(np.count_nonzero(merged_sig_x & ~merged_sig_y))
    return {"n_cells": len(merged), "value_x": _median(table_x[value]), "value_y": _median(table_y[value]),
            "null_x": _median(table_x[null]), "null_y": _median(table_y[null]),
            "significant_x": f"{int(sig_x.sum())}/{len(table_x)}", "significant_y": f"{int(sig_y.sum())}/{len(table_y)}",
            "separates": _verdict(separating, len(merged)),
            "note": f"X significant and Y not in {separating} of {len(merged)} matched cells"}


def _scored(table: pd.DataFrame) -> pd.DataFrame:
    """Cells with a p-value (scored, or underpowered: a p that cannot reach significance)."""
    return table[table["status"].isin(WITH_P)] if "status" in table else table


def _significant_by(column: str, alpha: float):
    def significant(table: pd.DataFrame, suffix: str = "") -> np.ndarray:
        return pd.to_numeric(table[column + suffix], errors="coerce").fillna(1.0).to_numpy() < alpha
    return significant


def _metric_rows(x: str, y: str, table_x: pd.DataFrame, table_y: pd.DataFrame, scope: str, pairing: str,
                 keys: Sequence[str], alpha: float) -> list[dict]:
    rows = []
    for metric in table_x["metric"].drop_duplicates():
        mx = table_x[table_x["metric"] == metric]
        my = table_y[table_y["metric"] == metric]
        # cells not scored count as not significant; the median values are over scored cells
        stats = _own_null_rows(mx, my, keys, "observed", "null_mean", _significant_by("p_adjusted", alpha))
        stats.update(value_x=_median(_scored(mx)["observed"]), value_y=_median(_scored(my)["observed"]),
                     null_x=_median(_scored(mx)["null_mean"]), null_y=_median(_scored(my)["null_mean"]))
        if _scored(mx).empty:
            stats.update(separates="not scored", note=f"no cell of {x} has a p-value: "
                         + "; ".join(sorted(set(mx["reason"].astype(str)) - {""}))[:300])
        rows.append({"x": x, "y": y, "scope": scope, "statistic": metric, "pairing": pairing, **stats,
                     "max_p_adjusted": float("nan")})
    return rows


def _agreement_rows(x: str, y: str, agreement: pd.DataFrame, pairing: str, alpha: float) -> list[dict]:
    overall = agreement[agreement["concept"].fillna("") == ""]
    ax, ay = overall[overall["comparison"] == x], overall[overall["comparison"] == y]
    if ax.empty or ay.empty:
        return []
    ca = _own_null_rows(ax, ay, CELL, "agreement", "null_mean", _significant_by("p_holm", alpha))
    recall = {"n_cells": len(ax.merge(ay, on=CELL)), "value_x": _median(ax["recall"]), "value_y": _median(ay["recall"]),
              "null_x": float("nan"), "null_y": float("nan"), "significant_x": "", "significant_y": "",
              "separates": "n/a", "note": "descriptive: tested between comparisons by McNemar / recall permutation"}
    return [{"x": x, "y": y, "scope": "concept labels", "statistic": "concept agreement", "pairing": pairing, **ca,
             "max_p_adjusted": float(pd.to_numeric(ax["p_holm"]).max())},
            {"x": x, "y": y, "scope": "concept labels", "statistic": "concept recall", "pairing": pairing, **recall,
             "max_p_adjusted": float("nan")}]


def _contrast_rows(x: str, y: str, contrasts: pd.DataFrame, pairing: str, alpha: float) -> list[dict]:
    rows = []
    mine = contrasts[(contrasts["comparison"] == x) & (contrasts["contrast"] == y)]
    for test, group in mine.groupby("test", sort=False):
        scored = _scored(group)
        p = pd.to_numeric(scored["p_holm"], errors="coerce").to_numpy()
        statistic = pd.to_numeric(scored["statistic"], errors="coerce").to_numpy()
        favours_x = int(np.count_nonzero((p < alpha) & (statistic > 0)))
        favours_y = int(np.count_nonzero((p < alpha) & (statistic < 0)))
        rows.append({"x": x, "y": y, "scope": "between comparisons", "statistic": test, "pairing": pairing,
                     "n_cells": len(group), "value_x": _median(scored["value_x"]), "value_y": _median(scored["value_y"]),
                     "null_x": _median(scored["null_mean"]), "null_y": float("nan"),
                     "significant_x": f"{favours_x}/{len(group)}", "significant_y": f"{favours_y}/{len(group)}",
                     "separates": _verdict(favours_x, len(group)),
                     "max_p_adjusted": float(np.nanmax(p)) if p.size else float("nan"),
                     "note": f"median statistic {_median(scored['statistic']):.4g}; significant_x/_y: cells where the "
                             "test favours X / Y (adjusted p < alpha)"})
    return rows


def shared_concepts_table(contrasts: Mapping[str, Sequence[str]], summaries: Mapping[tuple[str, str], pd.DataFrame],
                          semantic: Mapping[str, pd.DataFrame], agreement: Mapping[str, pd.DataFrame],
                          contrast_tables: Mapping[str, pd.DataFrame], semantic_pairing: str | None,
                          alpha: float = DEFAULT_ALPHA) -> pd.DataFrame:
    """COLUMNS, one row per (X, Y, statistic, pairing).

    `summaries`: (comparison, pairing) -> whole-space summary; `semantic`: comparison -> concept-subspace
    summary (of `semantic_pairing`); `agreement` / `contrast_tables`: pairing -> concept evidence tables.
    """
    rows = []
    pairings = list(agreement)
    for x, others in contrasts.items():
        for y in others:
            for pairing in pairings:
                if (x, pairing) in summaries and (y, pairing) in summaries:
                    rows += _metric_rows(x, y, summaries[(x, pairing)], summaries[(y, pairing)], "whole space",
                                         pairing, CELL, alpha)
            if semantic_pairing is not None and x in semantic and y in semantic:
                rows += _metric_rows(x, y, semantic[x], semantic[y], "concept subspaces", semantic_pairing,
                                     ["concept", *CELL], alpha)
            for pairing in pairings:
                rows += _agreement_rows(x, y, agreement[pairing], pairing, alpha)
                rows += _contrast_rows(x, y, contrast_tables[pairing], pairing, alpha)
    return pd.DataFrame(rows, columns=COLUMNS)


def _fmt(value) -> str:
    if isinstance(value, (float, np.floating)):
        return "" if not np.isfinite(value) else f"{value:.3g}"
    return html.escape(str(value))


def shared_concepts_html(table: pd.DataFrame, alpha: float = DEFAULT_ALPHA) -> str:
    """The answer as HTML: per contrast, what separates X from Y and what does not, then the full table."""
    parts = ["<html><head><meta charset='utf-8'><title>Does featsim see shared concepts?</title><style>"
             "body{font-family:sans-serif}td,th{padding:2px 8px;border-bottom:1px solid #ddd}"
             ".yes{background:#d8f0d8}.no{background:#f6dede}.partly{background:#f6f0d0}</style></head><body>",
             "<h1>Does featsim see shared concepts?</h1>",
             f"<p>A statistic separates X from Y when it tells them apart in every matched layer cell (adjusted p &lt; "
             f"{alpha}): X significant against its own null and Y not, or a test between them favouring X.</p>"]
    for (x, y), group in table.groupby(["x", "y"], sort=False):
        said = {verdict: sorted({f"{scope}: {s} ({p})" for scope, s, p in zip(rows["scope"], rows["statistic"],
                                                                              rows["pairing"])})
                for verdict, rows in group.groupby("separates")}
        parts.append(f"<h2>{html.escape(x)} vs {html.escape(y)}</h2><ul>")
        for verdict, text in (("yes", "separate them"), ("partly", "separate them in some cells"),
                              ("no", "do not separate them"), ("not scored", "are not scored")):
            if said.get(verdict):
                parts.append(f"<li><b>{text}</b>: {html.escape(', '.join(said[verdict]))}</li>")
        parts.append("</ul>")
        columns = [c for c in COLUMNS if c not in ("x", "y")]
        parts.append("<table><tr>" + "".join(f"<th>{c}</th>" for c in columns) + "</tr>")
        for _, row in group.iterrows():
            parts.append(f"<tr class='{html.escape(str(row['separates']))}'>"
                         + "".join(f"<td>{_fmt(row[c])}</td>" for c in columns) + "</tr>")
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts)
