"""Figures of the steering stage: self vs transferred effects per concept with null bands, and the concept x
concept agreement matrices, from the summary and specificity tables (featsim.steering_stage)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

METHOD_MARKERS = {"pairing": "o", "procrustes": "s"}


def _cells(table: pd.DataFrame) -> list[tuple[int, int]]:
    return sorted({(int(la), int(lb)) for la, lb in zip(table["layer_a"], table["layer_b"])})


def effects_figure(summary: pd.DataFrame, test_alpha: float, comparison: str) -> Figure:
    """Per cell (columns): top, A's self-steering KL per concept against the random-direction null's 95%
    quantile; bottom, the transfer agreement per concept and method with the null's mean..95% band: the
    specific agreement (whitened signatures) where the summary has it, else the raw one."""
    rows = summary[summary["alpha"] == test_alpha]
    cells = _cells(rows) or [(0, 0)]
    figure = Figure(figsize=(4.2 * len(cells), 6.4), layout="constrained")
    axes = figure.subplots(2, len(cells), squeeze=False)
    for column, (la, lb) in enumerate(cells):
        cell = rows[(rows["layer_a"] == la) & (rows["layer_b"] == lb)]
        concepts = sorted(cell["concept"].unique())
        x = np.arange(len(concepts))
        own = cell.drop_duplicates("concept").set_index("concept").reindex(concepts)
        top, bottom = axes[0, column], axes[1, column]
        top.bar(x, own["self_kl"], color="#4c72b0", label="concept vector")
        top.scatter(x, own["self_kl_null_q95"], marker="_", s=300, color="black", label="random direction, 95%")
        for i, p in enumerate(own["self_p"]):
            if np.isfinite(p):
                top.annotate(f"p={p:.3g}", (i, own["self_kl"].iloc[i]), ha="center", va="bottom", fontsize=7)
        top.set_title(f"A L{la} self-steering (alpha {test_alpha} x norm)", fontsize=9)
        top.set_ylabel("mean KL (nats)")
        for offset, (method, marker) in zip((-0.15, 0.15), METHOD_MARKERS.items()):
            moved = cell[cell["method"] == method].set_index("concept").reindex(concepts)
            specific = "transfer_agreement_specific" in moved and moved["transfer_agreement_specific"].notna().any()
            value, null_mean, null_q95 = (("transfer_agreement_specific", "transfer_specific_null_mean",
                                           "transfer_specific_null_q95") if specific else
                                          ("transfer_agreement", "transfer_null_mean", "transfer_null_q95"))
            if moved[value].notna().any():
                bottom.vlines(x + offset, moved[null_mean], moved[null_q95], color="grey", lw=4, alpha=0.5)
                bottom.scatter(x + offset, moved[value], marker=marker, zorder=3,
                               label=f"{method}{' specific' if specific else ''} (null mean..95% in grey)")
        bottom.axhline(0, color="black", lw=0.5)
        bottom.set_title(f"A L{la} -> B L{lb}: transferred effect", fontsize=9)
        bottom.set_ylabel("agreement with A's effect (r)")
        for axis in (top, bottom):
            axis.set_xticks(x, concepts, rotation=45, ha="right", fontsize=8)
        if column == 0:
            top.legend(fontsize=7)
            bottom.legend(fontsize=7)
    figure.suptitle(f"{comparison}: steering with concept vectors and their transfer", fontsize=10)
    return figure


def matrix_figure(agreements: list[dict], test_alpha: float, comparison: str) -> Figure:
    """Heatmaps of the agreement matrices at the test alpha: one per cell (columns) and method (rows), rows
    of a matrix = B steered with concept i's transferred vector, columns = A's effect of concept j."""
    methods = sorted({m["method"] for cell in agreements for m in cell["matrices"]})
    figure = Figure(figsize=(4.0 * max(len(agreements), 1), 3.8 * max(len(methods), 1)), layout="constrained")
    axes = figure.subplots(max(len(methods), 1), max(len(agreements), 1), squeeze=False)
    for column, cell in enumerate(agreements):
        for row, method in enumerate(methods):
            axis = axes[row, column]
            entry = next((m for m in cell["matrices"] if m["method"] == method and m["alpha"] == test_alpha), None)
            if entry is None or entry.get("matrix") is None:
                axis.set_axis_off()
                axis.set_title(f"A L{cell['layer_a']} -> B L{cell['layer_b']} {method}: fewer than 2 concepts",
                               fontsize=8)
                continue
            names = entry["concepts"].split(";")
            image = axis.imshow(np.asarray(entry["matrix"]), cmap="RdBu_r", vmin=-1, vmax=1)
            axis.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=7)
            axis.set_yticks(range(len(names)), names, fontsize=7)
            axis.set_xlabel("A's effect of concept j", fontsize=8)
            axis.set_ylabel("B steered with concept i", fontsize=8)
            axis.set_title(f"A L{cell['layer_a']} -> B L{cell['layer_b']} {method}\n"
                           f"diag - off = {entry['dominance']:.3f}, p = {entry['dominance_p']:.3g}", fontsize=8)
            figure.colorbar(image, ax=axis, shrink=0.7)
    figure.suptitle(f"{comparison}: concept x concept agreement (alpha {test_alpha} x norm)", fontsize=10)
    return figure


def downstream_figure(downstream: pd.DataFrame, comparison: str) -> Figure:
    """Per steered cell and later cell (columns): the paired overlap of A's and B's later-layer responders per
    concept and transfer method, with the null transfers' overlap from its mean to its 95% quantile in grey."""
    groups = sorted({(int(r.layer_a), int(r.layer_b), int(r.later_layer_a), int(r.later_layer_b))
                     for r in downstream.itertuples()})
    figure = Figure(figsize=(4.6 * max(len(groups), 1) + 2.0, 3.6), layout="constrained")
    axes = figure.subplots(1, max(len(groups), 1), squeeze=False)[0]
    if not groups:
        axes[0].set_axis_off()
        axes[0].set_title("no later cell to read out (steering only at the last compared layers)", fontsize=8)
    for axis, (la, lb, la2, lb2) in zip(axes, groups):
        cell = downstream[(downstream["layer_a"] == la) & (downstream["layer_b"] == lb)
                          & (downstream["later_layer_a"] == la2) & (downstream["later_layer_b"] == lb2)]
        concepts = sorted(cell["concept"].unique())
        x = np.arange(len(concepts))
        for offset, (method, marker) in zip((-0.15, 0.15), METHOD_MARKERS.items()):
            moved = cell[cell["method"] == method].set_index("concept").reindex(concepts)
            if moved["overlap"].notna().any():
                axis.vlines(x + offset, moved["overlap_null_mean"], moved["overlap_null_q95"], color="grey", lw=4,
                            alpha=0.5)
                axis.scatter(x + offset, moved["overlap"], marker=marker, zorder=3,
                             label=f"{method} (null mean..95% in grey)")
        n = int(cell["n_responders"].max()) if len(cell) else 0
        axis.set_title(f"steer A L{la} / B L{lb}: top {n} responders at A L{la2} / B L{lb2}", fontsize=9)
        axis.set_ylabel("paired responders (A-B pairs)")
        axis.set_xticks(x, concepts, rotation=45, ha="right", fontsize=8)
    if groups:
        axes[-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    figure.suptitle(f"{comparison}: downstream feature effects of steering", fontsize=10)
    return figure
