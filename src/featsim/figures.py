"""Figures for the report: layer-grid heatmaps, null histograms, concept grids, cross-comparison plots.

Every function takes summary DataFrames (featsim.summary) or arrays and returns a matplotlib
`Figure` built without pyplot (no global state, Agg canvas), so scripts and tests can render many
figures in one process; `save_figure` writes a PNG atomically and closes nothing global.
"""

from __future__ import annotations

import os
import textwrap
from dataclasses import dataclass
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle

from featsim.layout import cell_layers
from featsim.multiple_testing import WITH_P
from featsim.provenance import atomic_path
from featsim.summary import significance_marks

ANNOTATE_MAX_CELLS = 225
"""Grids with more cells than this are drawn without per-cell numbers (they would not be legible)."""

NOT_SCORED_COLOUR = "#d9d9d9"
UNDERPOWERED_HATCH = "////"
"""Hatching over an underpowered cell: its value is drawn, but it can never be significant."""
COMPARISON_COLOURS = ("#1b6ca8", "#d1495b", "#2a9d4a", "#edae49", "#6a4c93", "#00798c", "#8d6e63")


@dataclass(frozen=True)
class LayerGrid:
    """Values of one quantity on a comparison's layer grid: rows = layers of b, columns = layers of a."""

    values: np.ndarray  # [n_layers_b, n_layers_a], NaN where not scored
    marks: np.ndarray  # [n_layers_b, n_layers_a] significance marks ('' for none)
    layers_a: list[int]
    layers_b: list[int]
    scored: np.ndarray | None = None  # bool [n_layers_b, n_layers_a]: has a value (scored or underpowered)
    status: np.ndarray | None = None  # [n_layers_b, n_layers_a] status strings ('' where no row)


def layer_grid(table: pd.DataFrame, value: str, marks_from: str | None = "p_adjusted") -> LayerGrid:
    """Pivot one metric's rows (or any table with one row per layer pair) onto the layer grid."""
    if table.duplicated(["layer_a", "layer_b"]).any():
        raise ValueError("layer_grid needs one row per layer pair; filter the summary to one metric first")
    layers_a = sorted(int(v) for v in table["layer_a"].unique())
    layers_b = sorted(int(v) for v in table["layer_b"].unique())
    values = np.full((len(layers_b), len(layers_a)), np.nan)
    marks = np.full(values.shape, "", dtype=object)
    scored_cells = np.zeros(values.shape, dtype=bool)
    statuses = np.full(values.shape, "", dtype=object)
    col = {layer: i for i, layer in enumerate(layers_a)}
    row = {layer: i for i, layer in enumerate(layers_b)}
    for record in table.itertuples(index=False):
        i, j = row[int(record.layer_b)], col[int(record.layer_a)]
        status = getattr(record, "status", "scored")
        statuses[i, j] = status
        scored_cells[i, j] = status in WITH_P
        values[i, j] = float(getattr(record, value)) if status in WITH_P else np.nan
        if marks_from is not None and status == "scored":
            marks[i, j] = significance_marks(float(getattr(record, marks_from)))
    return LayerGrid(values, marks, layers_a, layers_b, scored_cells, statuses)


def _grid_size(n_cols: int, n_rows: int, cell: float | None = None, extra_w: float = 2.6, extra_h: float = 1.9):
    cell = cell or (0.8 if max(n_cols, n_rows) <= 6 else 0.55)
    width = min(max(extra_w + cell * n_cols, 4.8), 18.0)
    height = min(max(extra_h + cell * n_rows, 3.6), 14.0)
    return width, height


def _text_colour(cmap, norm_value: float) -> str:
    red, green, blue, _ = cmap(norm_value)
    return "black" if 0.299 * red + 0.587 * green + 0.114 * blue > 0.5 else "white"


def draw_grid(ax, values: np.ndarray, marks: np.ndarray | None, x_labels: Sequence[str], y_labels: Sequence[str],
              cmap_name: str, vmin: float, vmax: float, fmt: str, colorbar_label: str, annotate: bool | None = None,
              origin: str = "lower", scored: np.ndarray | None = None, status: np.ndarray | None = None):
    """Draw a matrix as an image with labelled ticks, a colourbar, per-cell numbers and marks; NaN cells grey.

    origin "lower" puts row 0 at the bottom (layer grids), "upper" at the top (concept lists). A NaN cell
    reads "n/s" (not scored) unless `scored` says it was scored, then "n/a" (e.g. z of a null whose sd is
    rounding noise). Cells whose `status` is underpowered are hatched and read "u/p" under their value.
    """
    cmap = colormaps[cmap_name].with_extremes(bad=NOT_SCORED_COLOUR)
    masked = np.ma.masked_invalid(values)
    image = ax.imshow(masked, cmap=cmap, vmin=vmin, vmax=vmax, origin=origin, aspect="auto",
                      interpolation="nearest")
    ax.set_xticks(range(len(x_labels)), labels=list(x_labels))
    ax.set_yticks(range(len(y_labels)), labels=list(y_labels))
    if annotate is None:
        annotate = values.size <= ANNOTATE_MAX_CELLS
    if annotate:
        size = 9 if values.size <= 64 else 7
        span = (vmax - vmin) or 1.0
        for (i, j), value in np.ndenumerate(values):
            if not np.isfinite(value):
                text = "n/a" if scored is not None and scored[i, j] else "n/s"
                ax.text(j, i, text, ha="center", va="center", fontsize=size, color="#555555")
                continue
            mark = marks[i, j] if marks is not None else ""
            if status is not None and status[i, j] == "underpowered":
                mark = "u/p"
            text = format(value, fmt) + (f"\n{mark}" if mark else "")
            colour = _text_colour(cmap, min(max((value - vmin) / span, 0.0), 1.0))
            ax.text(j, i, text, ha="center", va="center", fontsize=size, color=colour, linespacing=1.0)
    if status is not None:
        _hatch_underpowered(ax, status)
    colorbar = ax.figure.colorbar(image, ax=ax, shrink=0.9)
    colorbar.set_label(colorbar_label)
    return image


def _hatch_underpowered(ax, status: np.ndarray) -> None:
    """A hatched, unfilled rectangle over every underpowered cell (label `underpowered` for the legend)."""

    for (i, j), cell_status in np.ndenumerate(status):
        if cell_status == "underpowered":
            ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1.0, 1.0, fill=False, hatch=UNDERPOWERED_HATCH,
                                   edgecolor="#444444", linewidth=0.0, label="underpowered"))


def state_handles(statuses) -> list:
    """Legend entries for the cell states present besides `scored`: not scored, underpowered."""

    present = set(np.asarray(statuses, dtype=object).ravel())
    handles = []
    if "not_scored" in present:
        handles.append(Patch(facecolor=NOT_SCORED_COLOUR, edgecolor="#999999", label="n/s: not scored (see reason)"))
    if "underpowered" in present:
        handles.append(Patch(facecolor="white", edgecolor="#444444", hatch=UNDERPOWERED_HATCH,
                             label="u/p: underpowered (cannot reach adjusted p < alpha)"))
    return handles


def _state_legend(figure: Figure, statuses, loc: str = "outside upper center") -> None:
    """Legend of the non-scored states outside the panels, inside the constrained layout (nothing when
    every cell is scored). Figures with a suptitle put it at the right (`loc`), clear of the title."""
    handles = state_handles(statuses)
    if handles:
        ncols = len(handles) if "upper center" in loc or "lower center" in loc else 1
        figure.legend(handles=handles, fontsize=7, loc=loc, ncols=ncols, frameon=False)


def _value_range(values: np.ndarray, bounded: tuple[float, float] | None = (0.0, 1.0)) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return (0.0, 1.0)
    low, high = float(finite.min()), float(finite.max())
    if bounded is not None:
        low, high = min(low, bounded[0]), max(high, bounded[1])
    if high <= low:
        high = low + 1.0
    return low, high


@dataclass(frozen=True)
class GridLabels:
    """Names that go on a comparison's figures."""

    comparison: str
    pairing: str
    model_a: str = "a"
    model_b: str = "b"
    correction: str = "holm"

    @classmethod
    def for_comparison(cls, comparison: str, pairing: str, entry: Mapping, correction: str) -> "GridLabels":
        """From a `comparisons.<name>` config entry (its `a` and `b` model names)."""
        return cls(comparison, pairing, str(entry["a"]), str(entry["b"]), correction)

    @property
    def x_title(self) -> str:
        return f"layer of model a ({self.model_a})"

    @property
    def y_title(self) -> str:
        return f"layer of model b ({self.model_b})"

    @property
    def head(self) -> str:
        return f"{self.comparison}: {self.model_a} vs {self.model_b}, pairing {self.pairing}"


CORRECTION_NAMES = {"holm": "Holm", "bh": "Benjamini-Hochberg"}


def _marks_legend(correction: str, family: str) -> str:
    name = CORRECTION_NAMES.get(correction, correction)
    return (f"marks: {name}-adjusted p < .05 *, < .01 **, < .001 *** (family: {family}); grey n/s = not scored; "
            "hatched u/p = underpowered (its smallest attainable adjusted p is not below alpha: never significant)")


def heatmap_figure(grid: LayerGrid, labels: GridLabels, title: str, colorbar_label: str, cmap: str = "viridis",
                   value_range: tuple[float, float] | None = None, fmt: str = ".3f", family: str = "") -> Figure:
    """One layer-grid heatmap (x = layers of a, y = layers of b) with a colourbar and significance marks."""
    figure = Figure(figsize=_grid_size(len(grid.layers_a), len(grid.layers_b)), layout="constrained")
    ax = figure.add_subplot()
    vmin, vmax = value_range or _value_range(grid.values)
    draw_grid(ax, grid.values, grid.marks, [str(v) for v in grid.layers_a], [str(v) for v in grid.layers_b],
              cmap, vmin, vmax, fmt, colorbar_label, scored=grid.scored, status=grid.status)
    if grid.status is not None:
        _state_legend(figure, grid.status)
    ax.set_xlabel(labels.x_title)
    ax.set_ylabel(labels.y_title)
    ax.set_title(f"{title}\n{labels.head}", fontsize=10)
    if family:
        _footnote(figure, _marks_legend(labels.correction, family))
    return figure


def _footnote(figure: Figure, text: str) -> None:
    """Small left-aligned text under the axes, wrapped to the figure width; as the figure's supxlabel
    it is part of the constrained layout, so nothing is clipped without a second (tight-bbox) draw."""
    characters = max(40, int(figure.get_figwidth() * 72 / 7 * 1.7))  # ~7-pt glyphs are ~0.6 em wide
    figure.supxlabel(textwrap.fill(text, characters), x=0.01, ha="left", fontsize=7)


def metric_rows(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    rows = table[table["metric"] == metric]
    if rows.empty:
        raise ValueError(f"the summary has no rows for metric '{metric}' (has: {sorted(table['metric'].unique())})")
    return rows


def _family(rows: pd.DataFrame) -> str:
    tested = rows[rows["status"].isin(WITH_P)]
    size = int(tested["family_size"].iloc[0]) if len(tested) else 0
    return f"{size} cells with a p-value of this comparison, pairing and metric"


def observed_heatmap(table: pd.DataFrame, metric: str, labels: GridLabels) -> Figure:
    """Observed metric per layer pair, marked by adjusted permutation p."""
    rows = metric_rows(table, metric)
    grid = layer_grid(rows, "observed")
    return heatmap_figure(grid, labels, f"{metric}: observed score per layer pair", f"{metric} (observed)",
                          family=_family(rows))


def z_heatmap(table: pd.DataFrame, metric: str, labels: GridLabels) -> Figure:
    """z = (observed - null mean) / null sd per layer pair, on a diverging scale centred at 0."""
    rows = metric_rows(table, metric)
    grid = layer_grid(rows, "z")
    finite = np.abs(grid.values[np.isfinite(grid.values)])
    limit = max(float(finite.max()) if finite.size else 0.0, 2.0)
    return heatmap_figure(grid, labels, f"{metric}: z against the shuffled-pairing null", "z (obs - null mean) / null sd",
                          cmap="RdBu_r", value_range=(-limit, limit), fmt=".1f", family=_family(rows))


def _per_pair_rows(table: pd.DataFrame) -> pd.DataFrame:
    """One row per layer pair (n pairs and pair correlations do not depend on the metric)."""
    rows = table.sort_values("metric").drop_duplicates(["layer_a", "layer_b"]).copy()
    rows["status"] = "scored"
    return rows


def n_pairs_heatmap(table: pd.DataFrame, labels: GridLabels) -> Figure:
    """Number of latent pairs kept by the pairing per layer pair."""
    grid = layer_grid(_per_pair_rows(table), "n_pairs", marks_from=None)
    return heatmap_figure(grid, labels, "number of latent pairs after pairing and filters", "pairs",
                          cmap="Blues", value_range=_value_range(grid.values, bounded=(0.0, 0.0)), fmt=".0f")


def mean_correlation_heatmap(table: pd.DataFrame, labels: GridLabels) -> Figure:
    """Mean best-partner correlation before the filters and mean correlation of the kept pairs."""
    rows = _per_pair_rows(table)
    before = layer_grid(rows, "mean_corr_before", marks_from=None)
    after = layer_grid(rows, "mean_corr_after", marks_from=None)
    width, height = _grid_size(2 * len(before.layers_a), len(before.layers_b), extra_w=4.5)
    figure = Figure(figsize=(width, height), layout="constrained")
    titles = ("mean max-correlation (each live B latent's best A partner,\nbefore the pairing's filters)",
              "mean correlation of the kept pairs\n(after pairing and filters)")
    for position, (grid, title) in enumerate(zip((before, after), titles), start=1):
        ax = figure.add_subplot(1, 2, position)
        draw_grid(ax, grid.values, None, [str(v) for v in grid.layers_a], [str(v) for v in grid.layers_b],
                  "magma", 0.0, 1.0, ".2f", "Pearson r", scored=grid.scored)
        ax.set_xlabel(labels.x_title)
        ax.set_ylabel(labels.y_title)
        ax.set_title(title, fontsize=9)
    figure.suptitle(f"pair correlations\n{labels.head}", fontsize=10)
    return figure


def select_null_cells(rows: pd.DataFrame, n_cells: int) -> list[str]:
    """Cells whose null histogram is drawn: the largest and smallest z first, then the relative-depth diagonal.

    Chosen from the layout, not only the outcome: after the two extremes, cells nearest the diagonal
    (equal relative depth in both models, where similarity is expected to peak) in layer order.
    """
    scored = rows[rows["status"].isin(WITH_P)]
    if n_cells <= 0 or scored.empty:
        return []
    chosen: list[str] = []
    finite_z = scored[np.isfinite(scored["z"].to_numpy(dtype=float))]
    if len(finite_z):
        for cell in (finite_z.loc[finite_z["z"].idxmax(), "cell"], finite_z.loc[finite_z["z"].idxmin(), "cell"]):
            if cell not in chosen:
                chosen.append(cell)
    top_a = max(float(rows["layer_a"].max()), 1.0)
    top_b = max(float(rows["layer_b"].max()), 1.0)
    depth_gap = (scored["layer_a"] / top_a - scored["layer_b"] / top_b).abs()
    for cell in scored.assign(gap=depth_gap).sort_values(["gap", "layer_a", "layer_b"])["cell"]:
        if cell not in chosen:
            chosen.append(cell)
    return sorted(chosen[:n_cells], key=cell_layers)


def null_histograms(table: pd.DataFrame, metric: str, nulls: Mapping[str, np.ndarray], n_cells: int,
                    labels: GridLabels) -> Figure:
    """Histogram of the null draws of selected cells with the observed value and null mean marked."""
    rows = metric_rows(table, metric)
    cells = select_null_cells(rows, n_cells)
    if not cells:
        figure = Figure(figsize=(6, 2), layout="constrained")
        reason = "report.null_histograms is 0" if n_cells <= 0 else "no scored layer pair"
        figure.text(0.5, 0.5, f"{metric}: no null histogram drawn ({reason})", ha="center", va="center")
        return figure
    n_cols = min(len(cells), 4)
    n_rows = int(np.ceil(len(cells) / n_cols))
    figure = Figure(figsize=(3.6 * n_cols + 0.4, 2.9 * n_rows + 1.0), layout="constrained")
    by_cell = rows.set_index("cell")
    for position, cell in enumerate(cells, start=1):
        record = by_cell.loc[cell]
        draws = np.asarray(nulls[cell], dtype=float)
        ax = figure.add_subplot(n_rows, n_cols, position)
        low = min(float(draws.min()), float(record["observed"])) if draws.size else float(record["observed"])
        high = max(float(draws.max()), float(record["observed"])) if draws.size else float(record["observed"])
        pad = 0.05 * ((high - low) or 1.0)
        counts, edges = np.histogram(draws, bins=40, range=(low - pad, high + pad))
        ax.stairs(counts, edges, fill=True, color="#9e9e9e", label=f"null (m={draws.size})")  # one artist, not 40
        ax.axvline(float(record["null_mean"]), color="#444444", linestyle="--", linewidth=1, label="null mean")
        ax.axvline(float(record["observed"]), color="#d1495b", linewidth=2, label="observed")
        p_adj = float(record["p_adjusted"])
        verdict = "underpowered" if record["status"] == "underpowered" else significance_marks(p_adj)
        ax.set_title(f"{cell}: z={float(record['z']):.1f}, p={float(record['p_value']):.3g}, "
                     f"adj. p={p_adj:.3g}{' ' + verdict if verdict else ''}", fontsize=8)
        ax.set_xlabel(f"{metric}", fontsize=8)
        ax.set_ylabel("null draws", fontsize=8)
        ax.tick_params(labelsize=7)
        if position == 1:
            ax.legend(fontsize=7, loc="upper left")
    figure.suptitle(f"{metric}: shuffled-pairing null (B rows permuted) vs observed, selected layer pairs\n"
                    f"{labels.head}; adj. p = {CORRECTION_NAMES.get(labels.correction, labels.correction)}",
                    fontsize=10)
    return figure


def many_to_one_figure(candidates: Mapping[str, Mapping[int, int]], final: Mapping[str, Mapping[int, int]],
                       labels: GridLabels) -> Figure:
    """Grouped bars per layer pair: how many A latents are the partner of 1, 2, 3 ... B latents.

    Left: the candidate pairs before filters and de-duplication (for argmax-based strategies, every
    live B latent with its best A partner: the many-to-1 structure); right: the final pairs.
    """
    figure = Figure(figsize=(11.0, 4.4), layout="constrained")
    panels = ((candidates, "candidate pairs (each B latent's best A partner,\nbefore filters and de-duplication)"),
              (final, "final pairs (after filters and de-duplication)"))
    for position, (histograms, title) in enumerate(panels, start=1):
        ax = figure.add_subplot(1, 2, position)
        cells = sorted(histograms, key=cell_layers)
        partner_counts = sorted({n for hist in histograms.values() for n in hist})
        ax.set_title(title, fontsize=9)
        if not cells or not partner_counts:
            ax.text(0.5, 0.5, "no histogram in the pairs diagnostics", ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
            continue
        width = 0.8 / len(cells)
        positions = np.arange(len(partner_counts))
        colours = colormaps["viridis"](np.linspace(0.0, 0.9, len(cells)))
        for index, cell in enumerate(cells):
            heights = [histograms[cell].get(n, 0) for n in partner_counts]
            ax.bar(positions - 0.4 + width * (index + 0.5), heights, width=width, color=colours[index], label=cell)
        ax.set_xticks(positions, labels=[str(n) for n in partner_counts])
        ax.set_xlabel("B latents sharing one A partner (multiplicity)")
        ax.set_ylabel("A latents")
        if max(max(h.values(), default=0) for h in histograms.values()) > 50:
            ax.set_yscale("log")
        if len(cells) <= 24:
            ax.legend(title="layer pair", fontsize=7, title_fontsize=8, ncols=max(1, len(cells) // 8))
    figure.suptitle(f"many-to-1 histogram of the pairing\n{labels.head}", fontsize=10)
    return figure


def semantic_grid_figure(table: pd.DataFrame, metric: str, labels: GridLabels) -> Figure:
    """Concept x layer-pair grids of the concept subspaces: observed score, z (both marked by adjusted p)
    and the number of pairs inside the concept (with the concept's latent counts on each side)."""
    rows = metric_rows(table, metric)
    concepts = sorted(rows["concept"].unique())
    cell_order = sorted(rows["cell"].unique(), key=cell_layers)
    observed = np.full((len(concepts), len(cell_order)), np.nan)
    z_values = np.full(observed.shape, np.nan)
    n_pairs = np.full(observed.shape, np.nan)
    marks = np.full(observed.shape, "", dtype=object)
    latent_counts = np.full(observed.shape, "", dtype=object)
    scored_cells = np.zeros(observed.shape, dtype=bool)
    statuses = np.full(observed.shape, "", dtype=object)
    for record in rows.itertuples(index=False):
        i, j = concepts.index(record.concept), cell_order.index(record.cell)
        n_pairs[i, j] = record.n_pairs
        latent_counts[i, j] = f"{int(record.n_latents_a)}/{int(record.n_latents_b)}"
        statuses[i, j] = record.status
        if record.status in WITH_P:
            scored_cells[i, j] = True
            observed[i, j], z_values[i, j] = record.observed, record.z
        if record.status == "scored":
            marks[i, j] = significance_marks(float(record.p_adjusted))
    width, height = _grid_size(3 * len(cell_order), len(concepts), extra_w=8.0, extra_h=2.3)
    figure = Figure(figsize=(width, height), layout="constrained")
    finite = np.abs(z_values[np.isfinite(z_values)])
    z_limit = max(float(finite.max()) if finite.size else 0.0, 2.0)
    panels = ((observed, marks, f"{metric} (observed)", "viridis", _value_range(observed), ".2f",
               "observed score in each concept subspace"),
              (z_values, marks, "z", "RdBu_r", (-z_limit, z_limit), ".1f", "z against a null at the same n"),
              (n_pairs, None, "pairs in the concept", "Blues", _value_range(n_pairs, bounded=(0.0, 0.0)), ".0f",
               "pairs inside the concept\n(below: concept latents of a / b)"))
    for position, (values, panel_marks, bar_label, cmap, (vmin, vmax), fmt, title) in enumerate(panels, start=1):
        ax = figure.add_subplot(1, 3, position)
        shown_marks = latent_counts if panel_marks is None else panel_marks
        draw_grid(ax, values, shown_marks, cell_order, concepts, cmap, vmin, vmax, fmt, bar_label, origin="upper",
                  scored=scored_cells if panel_marks is not None else np.isfinite(values),
                  status=statuses if panel_marks is not None else None)

        ax.set_xlabel("layer pair (A = layer of a, B = layer of b)")
        if position == 1:
            ax.set_ylabel("concept")
        ax.set_title(title, fontsize=9)
        ax.tick_params(axis="x", labelrotation=45 if len(cell_order) > 4 else 0)
    tested = rows[rows["status"].isin(WITH_P)]
    family = f"{int(tested['family_size'].iloc[0]) if len(tested) else 0} concept x layer-pair cells with a p-value"
    _state_legend(figure, statuses, loc="outside right upper")
    figure.suptitle(f"{metric}: semantic subspaces (latents whose top tokens are a concept's keywords)\n"
                    f"{labels.head}", fontsize=10)
    _footnote(figure, _marks_legend(labels.correction, family))
    return figure


def _null_band(ax, x: float, null_mean: float, null_std: float, width: float) -> None:
    """Null mean +- 2 sd as a grey box with a line at the mean."""
    ax.bar(x, 4 * null_std, bottom=null_mean - 2 * null_std, width=width, color="#9e9e9e", alpha=0.45, linewidth=0)
    ax.hlines(null_mean, x - width / 2, x + width / 2, color="#555555", linewidth=1)


def _comparison_label(comparison: str, descriptions: Mapping[str, str]) -> str:
    return comparison + (f" ({descriptions[comparison]})" if descriptions.get(comparison) else "")


def _outside_legend(ax, handles=None) -> None:
    kwargs = {"handles": handles} if handles is not None else {}
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, **kwargs)


def _band_handles() -> list:

    return [Patch(color="#9e9e9e", alpha=0.45, label="null mean ± 2 sd"),
            Line2D([], [], marker="o", linestyle="", color="black", markerfacecolor="white",
                   label="hollow: not significant"),
            _square_handle("hollow square, hatched z: underpowered\n(cannot reach adjusted p < alpha)")]


def _square_handle(label: str):
    """Legend entry of the underpowered marker (a hollow square)."""

    return Line2D([], [], marker="s", linestyle="", color="black", markerfacecolor="white", label=label)


def _comparison_handles(comparisons: Sequence[str], descriptions: Mapping[str, str]) -> list:

    return [Line2D([], [], marker="o", linestyle="", color=COMPARISON_COLOURS[i % len(COMPARISON_COLOURS)],
                   label=_comparison_label(c, descriptions)) for i, c in enumerate(comparisons)]


def _offsets(n_groups: int) -> tuple[np.ndarray, float]:
    """x offsets of n groups inside one category slot, and the width each group gets."""
    width = 0.8 / max(n_groups, 1)
    return -0.4 + width * (np.arange(n_groups) + 0.5), width


def _cells_side_by_side(summaries: Mapping[str, pd.DataFrame]):
    """A two-row figure with one x slot per layer cell and one group per comparison inside each slot:
    (figure, (top axis, bottom axis), cells, slot centres, group offsets, group width)."""
    cells = sorted({c for t in summaries.values() for c in t["cell"]}, key=cell_layers)
    width = min(max(8.0, 4.5 + 0.45 * len(cells) * len(summaries)), 22.0)
    figure = Figure(figsize=(width, 7.2), layout="constrained")
    axes = figure.subplots(2, 1, sharex=True)
    offsets, slot = _offsets(len(summaries))
    return figure, tuple(axes), cells, np.arange(len(cells)), offsets, slot


def comparison_figure(summaries: Mapping[str, pd.DataFrame], metric: str, pairing: str,
                      descriptions: Mapping[str, str] | None = None, correction: str = "holm") -> Figure:
    """All comparisons side by side for one metric: observed vs null mean +- 2 sd per layer pair, and z.

    Reading: `main` against `ceiling` (same-model agreement) and `control` (shared syntax, not
    concepts). A metric that puts `control` as far above its null as `main` measures syntax.
    """
    descriptions = descriptions or {}
    figure, (ax_obs, ax_z), cells, x_base, offsets, slot = _cells_side_by_side(summaries)
    comparisons = list(summaries)
    for index, comparison in enumerate(comparisons):
        rows = metric_rows(summaries[comparison], metric).set_index("cell")
        colour = COMPARISON_COLOURS[index % len(COMPARISON_COLOURS)]
        for x, cell in zip(x_base + offsets[index], cells):
            if cell not in rows.index:
                continue
            record = rows.loc[cell]
            if record["status"] not in WITH_P:
                ax_obs.text(x, 0.03, "n/s", color=colour, ha="center", fontsize=7,
                            transform=ax_obs.get_xaxis_transform())
                continue
            _null_band(ax_obs, x, float(record["null_mean"]), float(record["null_std"]), 0.8 * slot)
            underpowered = record["status"] == "underpowered"
            significant = not underpowered and bool(significance_marks(float(record["p_adjusted"])))
            ax_obs.plot(x, float(record["observed"]), "s" if underpowered else "o", color=colour, markersize=7,
                        markerfacecolor=colour if significant else "white", markeredgewidth=1.5)
            ax_z.bar(x, float(record["z"]) if np.isfinite(float(record["z"])) else 0.0, width=0.8 * slot,
                     color=colour, alpha=1.0 if significant else 0.35,
                     hatch=UNDERPOWERED_HATCH if underpowered else None)
    _outside_legend(ax_obs, _comparison_handles(comparisons, descriptions) + _band_handles())
    ax_obs.set_ylabel(metric)
    ax_obs.set_title("observed score (dots; filled = significant after adjustment) vs shuffled-pairing null",
                     fontsize=9)
    ax_z.axhline(0, color="black", linewidth=0.8)
    ax_z.axhline(2, color="#9e9e9e", linewidth=0.8, linestyle="--")
    ax_z.set_ylabel("z (obs - null mean) / null sd")
    ax_z.set_title("z per layer pair (faded = not significant, hatched = underpowered; dashed: z = 2)", fontsize=9)
    ax_z.set_xticks(x_base, labels=cells, rotation=45 if len(cells) > 8 else 0)
    ax_z.set_xlabel("layer pair (A = layer of model a, B = layer of model b)")
    name = CORRECTION_NAMES.get(correction, correction)
    figure.suptitle(f"{metric}, pairing {pairing}: whole-space similarity per comparison\n"
                    f"significance: {name}-adjusted p < .05 within each comparison's layer grid", fontsize=10)
    return figure


def semantic_comparison_figure(semantic: Mapping[str, pd.DataFrame], metric: str, pairing: str,
                               descriptions: Mapping[str, str] | None = None, correction: str = "holm") -> Figure:
    """Concept-level scores of all comparisons side by side, per concept summarised over layer pairs.

    Top: median observed score over the comparison's layer pairs (whiskers min..max) against the
    median null mean +- 2 sd. Bottom: median z (whiskers min..max), labelled with the number of
    layer pairs significant after adjustment.
    """
    descriptions = descriptions or {}
    comparisons = list(semantic)
    concepts = sorted({c for t in semantic.values() for c in t["concept"]})
    width = min(max(8.0, 4.5 + 0.4 * len(concepts) * len(comparisons)), 22.0)
    figure = Figure(figsize=(width, 9.6), layout="constrained")
    ax_obs, ax_z, ax_n = figure.subplots(3, 1, sharex=True, height_ratios=(1.0, 1.0, 0.7))
    offsets, slot = _offsets(len(comparisons))
    x_base = np.arange(len(concepts))
    for index, comparison in enumerate(comparisons):
        rows = metric_rows(semantic[comparison], metric)
        colour = COMPARISON_COLOURS[index % len(COMPARISON_COLOURS)]
        for x, concept in zip(x_base + offsets[index], concepts):
            group = rows[rows["concept"] == concept]
            scored = group[group["status"].isin(WITH_P)]
            if scored.empty:
                if len(group):
                    ax_obs.text(x, 0.03, "n/s", color=colour, ha="center", fontsize=7,
                                transform=ax_obs.get_xaxis_transform())
                continue
            _null_band(ax_obs, x, float(scored["null_mean"].median()), float(scored["null_std"].median()), 0.8 * slot)
            n_significant = int((scored["significant"].astype(bool) & (scored["status"] == "scored")).sum())
            n_underpowered = int((scored["status"] == "underpowered").sum())
            all_underpowered = n_underpowered == len(scored)
            for ax, values in ((ax_obs, scored["observed"].to_numpy(float)), (ax_z, scored["z"].to_numpy(float))):
                values = values[np.isfinite(values)]
                if values.size == 0:  # every z NaN: nulls whose sd is rounding noise
                    continue
                median = float(np.median(values))
                ax.errorbar(x, median, yerr=[[median - values.min()], [values.max() - median]],
                            fmt="s" if all_underpowered else "o", color=colour, markersize=6, capsize=2,
                            markerfacecolor=colour if n_significant else "white", markeredgewidth=1.5)
            z_finite = scored["z"].to_numpy(float)
            z_top = float(np.nanmax(z_finite)) if np.isfinite(z_finite).any() else 0.0
            ax_z.annotate(f"{n_significant}/{len(group)}" + (f" u/p {n_underpowered}" if n_underpowered else ""),
                          (x, z_top), xytext=(0, 3),
                          textcoords="offset points", ha="center", va="bottom", fontsize=6, color=colour)
        for x, concept in zip(x_base + offsets[index], concepts):
            group = rows[rows["concept"] == concept]
            if len(group):
                ax_n.bar(x, float(group["n_pairs"].median()), width=0.8 * slot, color=colour, alpha=0.8)
                ax_n.plot(x, float(group["n_latents_b"].median()), "_", color="black", markersize=9,
                          markeredgewidth=2)
    _outside_legend(ax_obs, _comparison_handles(comparisons, descriptions) + _band_handles()[:1] + [_square_handle(
        "square: every layer pair underpowered\n(cannot reach adjusted p < alpha)")])
    ax_obs.set_ylabel(f"{metric} within the concept")
    ax_obs.set_title("median observed score over layer pairs (whiskers min..max) vs null at the same n; "
                     "hollow: no layer pair significant", fontsize=9)
    ax_z.axhline(0, color="black", linewidth=0.8)
    ax_z.axhline(2, color="#9e9e9e", linewidth=0.8, linestyle="--")
    ax_z.set_ylabel("z (obs - null mean) / null sd")
    ax_z.set_title("median z over layer pairs (whiskers min..max); label: significant / all layer pairs "
                   "(u/p: underpowered)", fontsize=9)
    ax_z.margins(y=0.12)
    ax_n.set_ylabel("count")
    ax_n.set_title("pairs inside the concept (bars) and concept latents of model b (black ticks); "
                   "medians over layer pairs", fontsize=9)
    ax_n.set_xticks(x_base, labels=concepts, rotation=30 if len(concepts) > 6 else 0)
    ax_n.set_xlabel("concept")
    name = CORRECTION_NAMES.get(correction, correction)
    figure.suptitle(f"{metric}, pairing {pairing}: concept-level similarity per comparison\n"
                    f"significance: {name}-adjusted p < .05 within each comparison's concept x layer grid",
                    fontsize=10)
    return figure


def pairs_comparison_figure(summaries: Mapping[str, pd.DataFrame], pairing: str,
                            descriptions: Mapping[str, str] | None = None) -> Figure:
    """Number of pairs and mean best-partner correlation per layer pair, all comparisons side by side."""
    descriptions = descriptions or {}
    figure, (ax_n, ax_corr), cells, x_base, offsets, slot = _cells_side_by_side(summaries)
    comparisons = list(summaries)
    for index, comparison in enumerate(comparisons):
        rows = _per_pair_rows(summaries[comparison]).set_index("cell").reindex(cells)
        colour = COMPARISON_COLOURS[index % len(COMPARISON_COLOURS)]
        x = x_base + offsets[index]
        ax_n.bar(x, rows["n_pairs"].to_numpy(float), width=slot, color=colour)
        ax_corr.bar(x, rows["mean_corr_before"].to_numpy(float), width=slot, color=colour, alpha=0.5)
        ax_corr.hlines(rows["mean_corr_after"].to_numpy(float), x - 0.4 * slot, x + 0.4 * slot, color="black",
                       linewidth=2)
    handles = [Patch(color=COMPARISON_COLOURS[i % len(COMPARISON_COLOURS)], label=_comparison_label(c, descriptions))
               for i, c in enumerate(comparisons)]
    _outside_legend(ax_n, handles)
    _outside_legend(ax_corr, [Patch(color="#9e9e9e", alpha=0.5, label="mean max-correlation\n(best partner, before filters)"),
                              Line2D([], [], color="black", linewidth=2, label="mean r of kept pairs")])
    ax_n.set_ylabel("latent pairs")
    ax_n.set_title("pairs kept by the pairing and filters", fontsize=9)
    ax_corr.set_ylabel("mean Pearson r")
    ax_corr.set_ylim(0, 1)
    ax_corr.set_title("mean max-correlation (bars) and mean correlation of kept pairs (black lines)", fontsize=9)
    ax_corr.set_xticks(x_base, labels=cells, rotation=45 if len(cells) > 8 else 0)
    ax_corr.set_xlabel("layer pair (A = layer of model a, B = layer of model b)")
    figure.suptitle(f"pairing {pairing}: how many latents find a partner, and how well, per comparison", fontsize=10)
    return figure


def save_figure(figure: Figure, path: str | os.PathLike, dpi: int = 100) -> None:
    """Write a figure as PNG atomically (one draw: the constrained layout keeps every label inside)."""
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=dpi)


# ---------------------------------------------------------------- figures per summary scope


COMPARISON_FIGURES = {"whole": comparison_figure, "concept": semantic_comparison_figure}
"""Per summary scope (featsim.summary.SCOPES): the figure that sets every comparison side by side for one metric."""
