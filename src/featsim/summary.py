"""Summary tables: score jsons of one (comparison, pairing) -> one CSV row per cell, with adjusted p.

A *cell* is one layer pair (whole space) or one (concept, layer pair) (semantic subspaces). The
multiple-testing family is every cell with a p-value (status scored or underpowered) of one
(comparison, pairing, metric): Holm and Benjamini-Hochberg adjusted p are both written, `correction`
picks the one behind `p_adjusted`, `significant` and the figures' marks, and the `family` column names
the family in words. A cell's `status` is scored, not_scored (no p; `reason` says why) or underpowered
(its smallest attainable adjusted p, `p_min_adjusted`, is not below `alpha`: it can never be significant).
A CSV has no metadata slot, so `featsim.targets.summary` writes its provenance to `<name>.provenance.json`
beside it.
"""

from __future__ import annotations

import html
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from featsim.layout import cell_name
from featsim.multiple_testing import (DEFAULT_ALPHA, STATUSES, WITH_P, adjust_pvalues, smallest_adjusted_p,
                                     underpowered_reason)
from featsim.provenance import atomic_path

ALPHA = DEFAULT_ALPHA
"""Default adjusted-p level behind the `significant` column (config `alpha`)."""


STAR_LEVELS = ((0.001, "***"), (0.01, "**"), (0.05, "*"))
"""Significance marks drawn from adjusted p (a 1000-permutation null reaches at best p = 1/1001)."""

CORRECTIONS = ("holm", "bh")
CORRECTION_NAMES = {"holm": "Holm", "bh": "Benjamini-Hochberg"}


SCORE_COLUMNS = [
    "comparison", "pairing", "metric", "cell", "layer_a", "layer_b", "status", "reason",
    "observed", "null_mean", "null_std", "z", "p_value", "p_min", "p_min_adjusted", "p_holm", "p_bh",
    "correction", "p_adjusted", "significant", "family", "family_size",
    "n_pairs", "n_permutations", "seed", "k_a", "k_b", "flags",
]
DIAGNOSTIC_COLUMNS = {  # summary column -> key of the pairs' A{la}_B{lb}.diagnostics.json (featsim.pairing)
    "mean_corr_before": "mean_best_corr_b",
    "mean_corr_after": "mean_corr_pairs",
    "mean_best_corr_a": "mean_best_corr_a",
    "coverage_a": "coverage_a",
    "coverage_b": "coverage_b",
}
PAIR_COLUMNS = list(DIAGNOSTIC_COLUMNS) + ["filter_counts"]
TAIL_COLUMNS = ["null_mean_exact", "null_std_exact", "z_exact", "null_skew", "p_tail", "p_tail_adjusted",
                "significant_tail", "p_cantelli", "tail_method", "tail_flags", "max_permutations", "sequential_h"]
"""Columns beside the permutation p (featsim.null_moments, featsim.null_tail): always last, so the
columns before them read as they did before these existed."""
SEMANTIC_EXTRA = ["concept", "concept_name", "n_latents_a", "n_latents_b", "n_pairs_sharing_keyword", "keywords",
                  "top_keywords_a", "top_keywords_b"]

COLUMN_DOCS = {
    "comparison": "comparison name (config comparisons.<name>)",
    "pairing": "pairing variant (config pairings.<name>)",
    "metric": "similarity metric (featsim.metrics.METRICS)",
    "concept": "concept of the semantic subspace (configs/concepts/...)",
    "concept_name": "the concept's display name",
    "keywords": "keywords shared by both latents of a pair, 'word:n_pairs' ';'-joined",
    "top_keywords_a": "top keyword of the a-side latents, 'word:n_pairs' ';'-joined",
    "top_keywords_b": "top keyword of the b-side latents, 'word:n_pairs' ';'-joined",
    "n_pairs_sharing_keyword": "pairs whose two latents share a keyword of the concept",
    "cell": "layer pair A{layer_a}_B{layer_b}",
    "layer_a": "layer of the comparison's model a",
    "layer_b": "layer of the comparison's model b",
    "status": "scored | not_scored (no meaningful score, no p) | underpowered (p_min_adjusted >= alpha: "
              "it cannot be significant, whatever the data)",
    "reason": "why a cell is not scored or underpowered (empty when scored)",
    "observed": "metric on the paired latents",
    "null_mean": "mean of the metric over the shuffled-pairing null (B rows permuted)",
    "null_std": "standard deviation of the null",
    "z": "(observed - null_mean) / null_std; empty when null_std is within the null's rounding tolerance",
    "p_value": "permutation p = (b+1)/(m+1), b = null draws >= observed (exact test with m = n! - 1 for tiny n)",
    "p_min": "smallest attainable p, max(1/(m+1), 1/n!)",
    "p_min_adjusted": "smallest attainable adjusted p (per `correction`) within `family`: the p_min vector adjusted",
    "p_holm": "Holm-adjusted p within `family`",
    "p_bh": "Benjamini-Hochberg-adjusted p within `family`",
    "correction": "config `correction`: which adjusted p drives p_adjusted/significant/marks",
    "p_adjusted": "p_holm or p_bh, per `correction`",
    "significant": "status scored and p_adjusted < alpha (config `alpha`, default 0.05)",
    "family": "the multiple-testing family these adjusted p belong to",
    "family_size": "number of cells with a p-value (scored or underpowered) in the family",
    "n_pairs": "paired latents the metric was computed on",
    "n_permutations": "null draws m",
    "seed": "seed of this cell's null",
    "k_a": "SVCCA components kept on side a (svcca only)",
    "k_b": "SVCCA components kept on side b (svcca only)",
    "flags": "guard flags, ';'-joined (e.g. n_lt_5k: n pairs < 5 x effective dimension)",
    "n_latents_a": "latents of model a in the concept",
    "n_latents_b": "latents of model b in the concept",
    "score_config_hash": "config hash recorded in the score json's provenance",
    "null_mean_exact": "exact mean of the metric over all n! re-pairings (closed form: cka, cka_unbiased, rsa, "
                       "mutual_knn; empty for svcca, procrustes)",
    "null_std_exact": "exact standard deviation over all n! re-pairings (same metrics)",
    "z_exact": "(observed - null_mean_exact) / null_std_exact",
    "null_skew": "skewness of the null draws (about the exact mean and sd when known)",
    "p_tail": "Pearson III tail probability at the observed score, fitted to the null's mean, sd and skewness "
              "(exact mean/sd where known): an approximation that resolves p below 1/(m+1); p_value stays the test",
    "p_tail_adjusted": "p_tail adjusted within `family` per `correction` (p_value stands in where a cell has "
                       "no p_tail)",
    "significant_tail": "status scored or underpowered and p_tail_adjusted < alpha: significant by the moment-matched "
                        "tail, not by the permutation count",
    "p_cantelli": "Cantelli bound 1/(1+z_exact^2) for z_exact > 0, else 1: a valid p from the exact moments alone",
    "tail_method": "how p_tail was fitted: pearson3_exact_moments or pearson3_sample_moments",
    "tail_flags": "p_tail_underflow (below float64 range, floored) or p_tail_beyond_support, ';'-joined",
    "max_permutations": "null draws allowed (null.permutations); n_permutations is the draws made",
    "sequential_h": "Besag-Clifford stopping after h exceedances (null.sequential_h; empty: fixed m draws)",
    "mean_corr_before": "mean max-correlation: each live B latent's best A partner, before the pairing's filters",
    "mean_corr_after": "mean correlation of the kept pairs",
    "mean_best_corr_a": "mean max-correlation of live A latents (best B partner)",
    "coverage_a": "share of live A latents that are paired",
    "coverage_b": "share of live B latents that are paired",
    "filter_counts": "pairs left after each pairing step, 'step:n' ';'-joined",
}


def record_identity(record: Mapping, path: str | os.PathLike, *keys: str) -> tuple:
    """Identity fields (e.g. layer_a, layer_b, metric) of a result json, from the provenance it was written with."""
    provenance = record.get("provenance") or {}
    missing = [key for key in keys if key not in provenance]
    if missing:
        raise ValueError(f"{path}: its provenance lacks {missing}; it was written by an older featsim, rebuild it "
                         f"(snakemake -f {path})")
    return tuple(provenance[key] for key in keys)


def record_cell(record: Mapping, path: str | os.PathLike) -> tuple[int, int]:
    """(layer_a, layer_b) of a score, pairs-diagnostics or concept-score json, from its provenance."""
    layer_a, layer_b = record_identity(record, path, "layer_a", "layer_b")
    return int(layer_a), int(layer_b)


def _optional_float(value) -> float:
    return float(value) if value is not None else math.nan


def read_score(path: str | os.PathLike) -> dict:
    """One score json as a flat row (floats NaN where absent); checks status and the p-value floor."""
    record = json.loads(Path(path).read_text())
    status = record.get("status")
    if status not in STATUSES:
        raise ValueError(f"{path}: status must be one of {', '.join(STATUSES)}, got {status!r}")
    layer_a, layer_b = record_cell(record, path)
    (metric,) = record_identity(record, path, "metric")
    n_permutations = record.get("n_permutations")
    row = {
        "metric": metric,
        "cell": cell_name(layer_a, layer_b),
        "layer_a": layer_a,
        "layer_b": layer_b,
        "status": status,
        "reason": record.get("reason") or "",
        "observed": _optional_float(record.get("observed")),
        "null_mean": _optional_float(record.get("null_mean")),
        "null_std": _optional_float(record.get("null_std")),
        "z": _optional_float(record.get("z")),
        "p_value": _optional_float(record.get("p_value")),
        "p_min": _p_min(record, status, n_permutations),
        "n_pairs": int(record.get("n_pairs") or 0),
        "n_permutations": int(n_permutations or 0),
        "seed": record.get("seed"),
        "k_a": _optional_float(record.get("k_a")),
        "k_b": _optional_float(record.get("k_b")),
        "flags": ";".join(record.get("flags") or []),
        "score_config_hash": (record.get("provenance") or {}).get("config_hash"),
        **_tail_columns(record),
    }
    if "concept" in record:
        row.update(_concept_columns(record))
    if status in WITH_P:
        p_value = row["p_value"]
        if not (np.isfinite(p_value) and 0.0 < p_value <= 1.0):
            raise ValueError(f"{path}: a {status} cell needs p_value in (0, 1], got {p_value}")
        if np.isfinite(row["p_min"]) and p_value < row["p_min"] * (1 - 1e-9):
            raise ValueError(f"{path}: p_value {p_value} is below its floor max(1/(m+1), 1/n!) = {row['p_min']} "
                             f"(m = {n_permutations}); rebuild the score (p must be (b+1)/(m+1))")
    return row


def _tail_columns(record: Mapping) -> dict:
    """The TAIL_COLUMNS a score json carries (empty or NaN for records written before they existed)."""
    columns = {key: _optional_float(record.get(key))
               for key in ("null_mean_exact", "null_std_exact", "z_exact", "null_skew", "p_tail", "p_cantelli",
                           "max_permutations", "sequential_h")}
    columns["tail_method"] = record.get("tail_method") or ""
    columns["tail_flags"] = ";".join(record.get("tail_flags") or [])
    return columns


def _p_min(record: Mapping, status: str, n_permutations) -> float:
    """The record's p_min; records written before p_min existed get 1/(m+1)."""
    if status not in WITH_P:
        return math.nan
    if record.get("p_min") is not None:
        return float(record["p_min"])
    return 1.0 / (n_permutations + 1) if n_permutations else math.nan


def _counts_text(counts: Mapping | None) -> str:
    return ";".join(f"{word}:{count}" for word, count in (counts or {}).items())


def _concept_columns(record: Mapping) -> dict:
    """Concept columns of a semantic score json (featsim.semantic.score_concept)."""
    keywords = record.get("keywords")
    columns = {"concept": record["concept"], "concept_name": record.get("concept_name") or record["concept"],
               "n_latents_a": int(record.get("n_latents_a") or 0), "n_latents_b": int(record.get("n_latents_b") or 0)}
    if isinstance(keywords, Mapping):  # keyword_summary: top keywords per side and shared keywords
        columns.update(keywords=_counts_text(keywords.get("shared")), top_keywords_a=_counts_text(keywords.get("a")),
                       top_keywords_b=_counts_text(keywords.get("b")),
                       n_pairs_sharing_keyword=_optional_float(keywords.get("n_pairs_sharing_a_keyword")))
    else:
        columns.update(keywords=";".join(str(k) for k in keywords or []), top_keywords_a="", top_keywords_b="",
                       n_pairs_sharing_keyword=math.nan)
    return columns


def read_pair_diagnostics(path: str | os.PathLike) -> dict:
    """The pairing diagnostics json of one layer pair (mean correlations, step counts, many-to-1 histograms)."""
    record = json.loads(Path(path).read_text())
    missing = [key for key in DIAGNOSTIC_COLUMNS.values() if key not in record]
    if missing:
        raise ValueError(f"{path}: pairing diagnostics lack {missing}; rebuild the pairs with this featsim version")
    return record


def diagnostics_row(path: str | os.PathLike) -> dict:
    """The summary columns taken from one layer pair's pairing diagnostics."""
    record = read_pair_diagnostics(path)
    layer_a, layer_b = record_cell(record, path)
    row = {"layer_a": layer_a, "layer_b": layer_b}
    row.update({column: _optional_float(record[key]) for column, key in DIAGNOSTIC_COLUMNS.items()})
    row["filter_counts"] = ";".join(f"{step['step']}:{step['n_pairs']}" for step in record.get("filter_counts", []))
    return row


def many_to_one_histogram(diagnostics: Mapping, key: str = "partners_per_a_candidates") -> dict[int, int]:
    """{number of B latents sharing one A partner: number of A latents} from a diagnostics record.

    `partners_per_a_candidates`: the best-partner candidates before filters and de-duplication (the
    many-to-1 structure of the B->A map); `partners_per_a`: the final pairs.
    """
    histogram = diagnostics.get(key) or {}
    return {int(n_partners): int(count) for n_partners, count in histogram.items()}


def significance_marks(p_adjusted: float) -> str:
    """'***' / '**' / '*' for adjusted p below 0.001 / 0.01 / 0.05, '' otherwise (and for NaN)."""
    if not np.isfinite(p_adjusted):
        return ""
    for level, mark in STAR_LEVELS:
        if p_adjusted < level:
            return mark
    return ""


def adjust_families(table: pd.DataFrame, family_keys: Sequence[str], correction: str, over: str,
                    alpha: float = ALPHA) -> pd.DataFrame:
    """Add p_holm, p_bh, p_adjusted, p_min_adjusted, significant, family, family_size; one family per
    `family_keys` group, and mark cells whose p_min_adjusted is not below `alpha` underpowered.

    Cells with a p-value (scored or underpowered) enter a family; not-scored cells keep NaN adjusted p.
    `over` names what the family ranges over (e.g. "layer pairs"), written into the `family` column.
    """
    if correction not in CORRECTIONS:
        raise ValueError(f"config key 'correction': {correction!r} is not one of {CORRECTIONS}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"config key 'alpha': must be in (0, 1), got {alpha!r}")
    table = table.copy()
    for column in ("p_holm", "p_bh", "p_min_adjusted", "p_tail_adjusted"):
        table[column] = np.nan
    table["family"] = ""
    table["family_size"] = 0
    for keys, group in table.groupby(list(family_keys), sort=False):
        keys = keys if isinstance(keys, tuple) else (keys,)
        tested = group.index[group["status"].isin(WITH_P)]
        name = "; ".join(f"{k}={v}" for k, v in zip(family_keys, keys)) + f"; over {over}"
        table.loc[group.index, "family"] = name
        table.loc[group.index, "family_size"] = len(tested)
        if len(tested):
            p_values = table.loc[tested, "p_value"].to_numpy(dtype=float)
            table.loc[tested, "p_holm"] = adjust_pvalues(p_values, method="holm")
            table.loc[tested, "p_bh"] = adjust_pvalues(p_values, method="bh")
            table.loc[tested, "p_min_adjusted"] = smallest_adjusted_p(table.loc[tested, "p_min"].to_numpy(float),
                                                                      method=correction)
            table.loc[tested, "p_tail_adjusted"] = adjust_pvalues(_tail_or_permutation_p(table.loc[tested]),
                                                                  method=correction)
    table["correction"] = correction
    table["p_adjusted"] = table["p_holm" if correction == "holm" else "p_bh"]
    weak = table["status"].isin(WITH_P) & ~(table["p_min_adjusted"] < alpha)
    for index in table.index[weak]:
        row = table.loc[index]
        table.loc[index, "status"] = "underpowered"
        table.loc[index, "reason"] = underpowered_reason(
            float(row["p_min"]), alpha, int(row["n_pairs"]), _draws_allowed(row),
            p_min_adjusted=float(row["p_min_adjusted"]), correction=CORRECTION_NAMES[correction],
            family_size=int(row["family_size"]))
    table["significant"] = (table["status"] == "scored") & (table["p_adjusted"] < alpha)
    table["significant_tail"] = table["status"].isin(WITH_P) & (table["p_tail_adjusted"] < alpha)
    return table


def _draws_allowed(row: pd.Series) -> int:
    """The null draws a cell was allowed (max_permutations; n_permutations for older records)."""
    allowed = row.get("max_permutations", math.nan)
    return int(allowed) if np.isfinite(allowed) else int(row["n_permutations"])


def _tail_or_permutation_p(tested: pd.DataFrame) -> np.ndarray:
    """Each tested cell's p_tail, or its permutation p where it has none (an exact null, a null at rounding
    level, a record written before p_tail existed), so the tail family holds every tested cell."""
    p_tail = tested["p_tail"].to_numpy(float) if "p_tail" in tested else np.full(len(tested), np.nan)
    return np.where(np.isfinite(p_tail), p_tail, tested["p_value"].to_numpy(float))


def _ordered(table: pd.DataFrame, columns: Sequence[str], sort_by: Sequence[str]) -> pd.DataFrame:
    extra = [c for c in table.columns if c not in columns and c not in TAIL_COLUMNS]
    extra += [c for c in TAIL_COLUMNS if c in table.columns]
    return table[[c for c in columns if c in table.columns] + extra].sort_values(list(sort_by)).reset_index(drop=True)


@dataclass(frozen=True)
class Scope:
    """How one kind of score file is summarised: whole-space cells or concept subspaces of cells."""

    label: str  # the overview's `scope` column and the HTML title
    family: str  # what one multiple-testing family adjusts over (per comparison, pairing and metric)
    columns: tuple[str, ...]
    sort_by: tuple[str, ...]
    pair_columns: bool  # joins the pairing diagnostics of each layer pair


SCOPES = {
    "whole": Scope("whole space", "layer pairs", tuple(SCORE_COLUMNS + PAIR_COLUMNS), ("metric", "layer_a", "layer_b"),
                   pair_columns=True),
    "concept": Scope("concepts", "concepts x layer pairs",
                     tuple(SCORE_COLUMNS[:3] + ["concept"] + SCORE_COLUMNS[3:] + SEMANTIC_EXTRA[1:]),
                     ("metric", "concept", "layer_a", "layer_b"), pair_columns=False),
}
"""Whole-space scores (scores/...) and concept-subspace scores (semantic/...) go through the same summary."""


def summarize(score_paths: Iterable[str | os.PathLike], diagnostics_paths: Iterable[str | os.PathLike],
              comparison: str, pairing: str, correction: str, alpha: float = ALPHA, scope: str = "whole") -> pd.DataFrame:
    """One row per scored cell of a comparison/pairing (per layer pair and metric, and per concept in the
    concept scope), with p adjusted across each metric's family (SCOPES[scope].family).

    `diagnostics_paths` (whole scope) are the pairs' diagnostics jsons; their mean correlations before/after the
    filters are joined on the layer pair.
    """
    shape = SCOPES[scope]
    rows = [read_score(path) for path in score_paths]
    if not rows:
        raise ValueError(f"no {shape.label} score files for comparison '{comparison}', pairing '{pairing}'")
    if scope == "concept":
        missing = [row["cell"] for row in rows if "concept" not in row]
        if missing:
            raise ValueError(f"concept score files for cells {missing[:3]} lack the 'concept' key; rebuild them")
    table = pd.DataFrame(rows)
    table.insert(0, "comparison", comparison)
    table.insert(1, "pairing", pairing)
    if shape.pair_columns:
        diagnostics = [diagnostics_row(path) for path in diagnostics_paths]
        if diagnostics:
            table = table.merge(pd.DataFrame(diagnostics), on=["layer_a", "layer_b"], how="left")
        else:
            for key in PAIR_COLUMNS:
                table[key] = np.nan if key != "filter_counts" else ""
    table = adjust_families(table, ["comparison", "pairing", "metric"], correction, over=shape.family, alpha=alpha)
    return _ordered(table, shape.columns, shape.sort_by)


def read_summary(path: str | os.PathLike) -> pd.DataFrame:
    """A summary CSV back as a DataFrame (empty strings kept as '', not NaN)."""
    text = ("reason", "flags", "keywords", "top_keywords_a", "top_keywords_b", "family", "filter_counts",
            "tail_method", "tail_flags")
    table = pd.read_csv(path, keep_default_na=False, na_values=[""], dtype={column: str for column in text})
    for column in text:
        if column in table.columns:
            table[column] = table[column].fillna("").astype(str)
    return table


HTML_COLUMNS = ["comparison", "scope", "metric", "concept", "cell", "status", "n_cells", "n_scored", "n_significant",
                "n_underpowered", "n_not_scored",
                "median_observed", "median_null_mean", "median_excess", "median_z", "median_n_pairs", "observed", "null_mean", "null_std", "z", "p_value",
                "p_adjusted", "p_min_adjusted", "n_pairs", "n_latents_a", "n_latents_b", "n_pairs_sharing_keyword",
                "k_a", "k_b",
                "mean_corr_before", "mean_corr_after", "flags", "reason", "not_scored_reasons"]


def _fmt(value) -> str:
    if isinstance(value, (float, np.floating)):
        if not np.isfinite(value):
            return ""
        return f"{value:.3g}" if abs(value) < 1e4 else f"{value:.0f}"
    return html.escape(str(value))


def summary_html(table: pd.DataFrame, title: str, provenance: Mapping | None = None) -> str:
    """A readable HTML rendering of a summary table (key columns, marks from adjusted p)."""
    columns = [c for c in HTML_COLUMNS if c in table.columns]
    correction = table["correction"].iloc[0] if len(table) else ""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns) + "<th>mark</th>"
    body = []
    for _, row in table.iterrows():
        status = row.get("status", "scored")
        mark = significance_marks(float(row["p_adjusted"])) if "p_adjusted" in row and status == "scored" else ""
        style = ' class="sig"' if mark else {"not_scored": ' class="ns"', "underpowered": ' class="up"'}.get(status, "")
        cells = "".join(f"<td>{_fmt(row[c])}</td>" for c in columns)
        body.append(f"<tr{style}>{cells}<td>{mark}</td></tr>")
    families = sorted(set(table["family"])) if len(table) and "family" in table else []
    family_text = "".join(f"<li>{html.escape(f)}</li>" for f in families)
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<!-- featsim provenance: {html.escape(json.dumps(dict(provenance or {})), quote=False).replace("--", "- -")} -->
<style>
body {{ font-family: sans-serif; font-size: 13px; margin: 1em; }}
table {{ border-collapse: collapse; }} th, td {{ border: 1px solid #ccc; padding: 2px 6px; text-align: right; }}
th {{ background: #eee; position: sticky; top: 0; }} tr.sig td {{ background: #e6f4e6; }}
tr.ns td {{ color: #999; }} tr.up td {{ color: #8a5a00; background: #fff4e0; font-style: italic; }}
</style></head><body>
<h2>{html.escape(title)}</h2>
<p>p_adjusted is the <b>{html.escape(str(correction))}</b>-adjusted permutation p within each family below;
marks: * &lt; 0.05, ** &lt; 0.01, *** &lt; 0.001. Grey rows were not scored (see reason); italic orange rows
are underpowered: their smallest attainable adjusted p (p_min_adjusted) is not below alpha, so they can never be
significant (not the same as "not significant").
The full table, with both adjustments and provenance, is the CSV beside this file.</p>
<ul>{family_text}</ul>
<table><thead><tr>{head}</tr></thead><tbody>
{chr(10).join(body)}
</tbody></table></body></html>
"""


def write_html(path: str | os.PathLike, text: str) -> None:
    """Write an HTML page atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _reason_counts(reasons: pd.Series) -> str:
    """Distinct reasons with their counts, most common first, ' | '-joined; numbers (which differ per
    cell) read N, so cells not scored for the same rule count together."""
    heads = reasons.fillna("").astype(str).map(lambda text: re.sub(r"\d+", "N", text).strip() or "unknown")
    return " | ".join(f"{head} ({count})" for head, count in heads.value_counts().items())


def comparison_overview(summaries: Mapping[str, pd.DataFrame],
                        semantic: Mapping[str, pd.DataFrame] | None = None) -> pd.DataFrame:
    """One row per (comparison, scope, metric): how many cells are significant, median observed vs null.

    scope is `whole space` (summaries) or `concepts` (semantic summaries). This is the table to read
    `main` against `ceiling` (same-model agreement) and `control` (shared syntax, no shared concepts).
    Cells are counted by status (scored, underpowered: can never be significant, not scored); medians
    are over the cells with a p-value (scored and underpowered), `not_scored_reasons` says why the rest
    have none.
    """
    rows = []
    for scope, tables in ((SCOPES["whole"].label, summaries), (SCOPES["concept"].label, semantic or {})):
        for comparison, table in tables.items():
            for metric, group in table.groupby("metric", sort=False):
                scored = group[group["status"].isin(WITH_P)]
                not_scored = group[group["status"] == "not_scored"]
                rows.append({
                    "comparison": comparison, "scope": scope, "metric": metric,
                    "n_cells": len(group), "n_scored": int((group["status"] == "scored").sum()),
                    "n_underpowered": int((group["status"] == "underpowered").sum()),
                    "n_not_scored": len(not_scored),
                    "n_significant": int((scored["significant"].astype(bool) & (scored["status"] == "scored")).sum()),
                    "median_observed": scored["observed"].median(),
                    "median_null_mean": scored["null_mean"].median(),
                    "median_excess": (scored["observed"] - scored["null_mean"]).median(),
                    "median_z": scored["z"].median(),
                    "median_n_pairs": scored["n_pairs"].median(),
                    "mean_corr_after": (scored["mean_corr_after"].mean()
                                        if "mean_corr_after" in scored else np.nan),
                    "correction": group["correction"].iloc[0],
                    "not_scored_reasons": _reason_counts(not_scored["reason"]),
                })
    return pd.DataFrame(rows)
