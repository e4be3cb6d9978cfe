"""Targets of the figure and browser rules: PNGs of the layer grids, null histograms and comparisons (from
summary tables and the score and pair files beside them), and the pair browser page with its scatter."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from featsim.alignment import RowPairs
from featsim.browser import (BrowserSettings, browser_page, figure_png, labels_index, pair_activations, scatter_figure,
                             top_pairs)
from featsim.figures import (COMPARISON_FIGURES, GridLabels, many_to_one_figure, mean_correlation_heatmap, metric_rows,
                             n_pairs_heatmap, null_histograms, observed_heatmap, pairs_comparison_figure, save_figure,
                             select_null_cells, semantic_grid_figure, z_heatmap)
from featsim.layout import NULL, cell_name, sibling
from featsim.parquet import read_parquet_provenance
from featsim.provenance import atomic_path, make_provenance
from featsim.summary import many_to_one_histogram, read_pair_diagnostics, record_cell, record_identity


def build_browser(pairs_path: str | os.PathLike, labels_a_path: str | os.PathLike, labels_b_path: str | os.PathLike,
                  codes_a, codes_b, html_path: str | os.PathLike, scatter_path: str | os.PathLike,
                  settings: BrowserSettings, title: str, rows=None,
                  ids: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Write one layer pair's browser page and scatter PNG (provenance: the settings and `ids`); returns the
    pairs listed.

    `codes_a`/`codes_b` are code stores (featsim.stores.open_codes) of the two sides at this layer pair;
    `rows` (bool mask, or featsim.alignment.RowPairs for codes of two tokenizations) restricts the scatter
    to the tokens the pairs were correlated on.
    """
    pairs = pd.read_parquet(pairs_path)
    listed = top_pairs(pairs, settings.browser_pairs)
    scattered = listed.head(settings.scatter_pairs)
    aligned = isinstance(rows, RowPairs)
    values_a, values_b = pair_activations(codes_a, codes_b, scattered["a"].tolist(), scattered["b"].tolist(),
                                          aligned=aligned)
    if aligned:
        values_a, values_b = values_a[rows.a], values_b[rows.b]
    elif rows is not None:
        values_a, values_b = values_a[rows], values_b[rows]
    figure = scatter_figure(values_a, values_b, scattered, f"{title}: activation scatter of the top pairs")
    save_figure(figure, scatter_path)
    labels_a = labels_index(pd.read_parquet(labels_a_path), str(labels_a_path))
    labels_b = labels_index(pd.read_parquet(labels_b_path), str(labels_b_path))
    upstream = read_parquet_provenance(pairs_path)
    note = f"{len(pairs)} pairs in total (pairs file config hash {upstream.get('config_hash', 'unknown')})."
    provenance = make_provenance(asdict(settings), kind="browser", **dict(ids or {}), title=title,
                                 pairs=str(pairs_path), pairs_config_hash=upstream.get("config_hash"))
    page = browser_page(listed, labels_a, labels_b, title, figure_png(figure), settings.contexts, note, provenance)
    with atomic_path(html_path) as tmp:
        Path(tmp).write_text(page, encoding="utf-8")
    return listed


def null_draws(score_paths: Sequence[str | os.PathLike], metric: str, cells: Sequence[str]) -> dict[str, np.ndarray]:
    """{cell: null draws} of one metric for the chosen cells, from the `.null.npy` beside each score json."""
    wanted = set(cells)
    draws = {}
    for path in score_paths:
        record = json.loads(Path(path).read_text())
        cell = cell_name(*record_cell(record, path))
        if record_identity(record, path, "metric") != (metric,) or cell not in wanted:
            continue
        source = sibling(path, NULL)
        if not source.exists():
            raise FileNotFoundError(f"{source}: the null draws of {path} are missing; rebuild the score")
        draws[cell] = np.load(source)
    missing = wanted - set(draws)
    if missing:
        raise ValueError(f"no score file of metric '{metric}' for cells {sorted(missing)}")
    return draws


def pair_histograms(diagnostics_paths: Sequence[str | os.PathLike]) -> tuple[dict, dict]:
    """({cell: candidate many-to-1 histogram}, {cell: final-pairs histogram}) from pairs diagnostics."""
    candidates, final = {}, {}
    for path in diagnostics_paths:
        record = read_pair_diagnostics(path)
        cell = cell_name(*record_cell(record, path))
        candidates[cell] = many_to_one_histogram(record, "partners_per_a_candidates")
        final[cell] = many_to_one_histogram(record, "partners_per_a")
    return candidates, final


def write_layer_figures(table: pd.DataFrame, score_paths: Sequence[str | os.PathLike],
                        diagnostics_paths: Sequence[str | os.PathLike], labels: GridLabels, metrics: Sequence[str],
                        outputs: Mapping[str, Sequence[str] | str], n_null_cells: int) -> None:
    """All layer-grid figures of one (comparison, pairing).

    `outputs`: `observed`, `z`, `null` (one path per metric, in `metrics` order), and `n_pairs`,
    `correlation`, `many_to_one` (one path each).
    """
    for key in ("observed", "z", "null"):
        if len(outputs[key]) != len(metrics):
            raise ValueError(f"outputs['{key}'] has {len(outputs[key])} paths for {len(metrics)} metrics")
    for metric, observed, z, null in zip(metrics, outputs["observed"], outputs["z"], outputs["null"]):
        save_figure(observed_heatmap(table, metric, labels), observed)
        save_figure(z_heatmap(table, metric, labels), z)
        cells = select_null_cells(metric_rows(table, metric), n_null_cells)
        nulls = null_draws(score_paths, metric, cells)
        save_figure(null_histograms(table, metric, nulls, n_null_cells, labels), null)
    save_figure(n_pairs_heatmap(table, labels), outputs["n_pairs"])
    save_figure(mean_correlation_heatmap(table, labels), outputs["correlation"])
    save_figure(many_to_one_figure(*pair_histograms(diagnostics_paths), labels), outputs["many_to_one"])


def _check_paths(outputs: Sequence[str], metrics: Sequence[str], what: str) -> None:
    if len(outputs) != len(metrics):
        raise ValueError(f"{what}: {len(outputs)} output paths for {len(metrics)} metrics")


def write_semantic_figures(table: pd.DataFrame, labels: GridLabels, metrics: Sequence[str],
                           outputs: Sequence[str]) -> None:
    """One concept x layer-pair grid figure per metric (paths in `metrics` order)."""
    _check_paths(outputs, metrics, "semantic figures")
    for metric, path in zip(metrics, outputs):
        save_figure(semantic_grid_figure(table, metric, labels), path)


def write_comparison_figures(summaries: Mapping[str, pd.DataFrame], pairing: str, metrics: Sequence[str],
                             outputs: Sequence[str], descriptions: Mapping[str, str], correction: str,
                             scope: str = "whole", pairs_output: str | None = None) -> None:
    """Cross-comparison figures of one scope, one per metric; with `pairs_output`, the pairs/correlation one."""
    _check_paths(outputs, metrics, f"{scope} comparison figures")
    for metric, path in zip(metrics, outputs):
        save_figure(COMPARISON_FIGURES[scope](summaries, metric, pairing, descriptions, correction), path)
    if pairs_output is not None:
        save_figure(pairs_comparison_figure(summaries, pairing, descriptions), pairs_output)
