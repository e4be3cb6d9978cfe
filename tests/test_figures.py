"""Figures: rendered from synthetic summaries; the drawn data equal the tables, PNGs are written atomically."""

import json

import numpy as np
import pytest
from matplotlib.image import AxesImage
from synthetic_results import write_pairs, write_scores, write_semantic

from featsim import figures
from featsim.layout import DIAGNOSTICS, sibling
from featsim.summary import many_to_one_histogram, summarize
from featsim.targets import figures as figure_targets

METRICS = ["svcca", "rsa"]
LAYERS_A, LAYERS_B = [0, 1, 2], [0, 1]
LABELS = figures.GridLabels("main", "one_to_one", "A", "B", "holm")


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    tables, semantic, scores, diagnostics = {}, {}, {}, {}
    for seed, cmp in enumerate(["main", "control", "ceiling"]):
        scores[cmp] = write_scores(root, cmp, "one_to_one", METRICS, LAYERS_A, LAYERS_B, seed=seed,
                                   not_scored={("svcca", 2, 1)})
        pairs, _ = write_pairs(root, cmp, "one_to_one", LAYERS_A, LAYERS_B, seed=seed)
        diagnostics[cmp] = [sibling(p, DIAGNOSTICS) for p in pairs]
        tables[cmp] = summarize(scores[cmp], diagnostics[cmp], cmp, "one_to_one", "holm")
        paths = write_semantic(root, cmp, "one_to_one", ["animal", "color", "month"], METRICS, LAYERS_A, LAYERS_B,
                               seed=seed, not_scored={("month", "svcca", 0, 0)})
        semantic[cmp] = summarize(paths, [], cmp, "one_to_one", "holm", scope="concept")
    return {"tables": tables, "semantic": semantic, "scores": scores, "diagnostics": diagnostics}


def _images(figure):
    return [image for ax in figure.axes for image in ax.get_images() if isinstance(image, AxesImage)]


def _plain_grid(table, metric, value):
    """The expected heatmap matrix, written out plainly: rows = layers of b, columns = layers of a."""
    expected = np.full((len(LAYERS_B), len(LAYERS_A)), np.nan)
    for _, row in table[table["metric"] == metric].iterrows():
        if row["status"] == "scored":
            expected[LAYERS_B.index(row["layer_b"]), LAYERS_A.index(row["layer_a"])] = row[value]
    return expected


@pytest.mark.parametrize("kind,value", [("observed", "observed"), ("z", "z")])
def test_heatmap_data_equal_the_table(synthetic, kind, value, tmp_path):
    table = synthetic["tables"]["main"]
    build = figures.observed_heatmap if kind == "observed" else figures.z_heatmap
    figure = build(table, "svcca", LABELS)
    (image,) = _images(figure)
    drawn = image.get_array()
    expected = _plain_grid(table, "svcca", value)
    assert drawn.shape == (len(LAYERS_B), len(LAYERS_A))
    np.testing.assert_array_equal(np.ma.getmaskarray(drawn), np.isnan(expected))
    np.testing.assert_allclose(drawn.filled(np.nan), expected)
    assert len(figure.axes) == 2  # heatmap + colourbar
    texts = [t.get_text() for t in figure.axes[0].texts]
    assert len(texts) == drawn.size and texts.count("n/s") == 1
    title = figure.axes[0].get_title()
    assert "svcca" in title and "main" in title
    if kind == "z":
        low, high = image.get_clim()
        assert low == -high and high >= np.nanmax(np.abs(expected))
    out = tmp_path / f"{kind}.png"
    figures.save_figure(figure, out)
    assert out.stat().st_size > 5000 and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list(tmp_path.iterdir()) == [out]


def test_significance_marks_follow_adjusted_p(synthetic):
    table = synthetic["tables"]["main"]
    grid = figures.layer_grid(table[table["metric"] == "rsa"], "observed")
    for _, row in table[table["metric"] == "rsa"].iterrows():
        mark = grid.marks[LAYERS_B.index(row["layer_b"]), LAYERS_A.index(row["layer_a"])]
        assert (mark != "") == (row["p_holm"] < 0.05)
    with pytest.raises(ValueError, match="one row per layer pair"):
        figures.layer_grid(table, "observed")


def test_pair_heatmaps_show_n_pairs_and_mean_correlations(synthetic):
    table = synthetic["tables"]["main"]
    one_metric = table[table["metric"] == "rsa"]
    (image,) = _images(figures.n_pairs_heatmap(table, LABELS))
    n_pairs = _plain_grid(one_metric, "rsa", "n_pairs")
    n_pairs_any = np.array([[table[(table["layer_a"] == la) & (table["layer_b"] == lb)].sort_values("metric")
                             ["n_pairs"].iloc[0] for la in LAYERS_A] for lb in LAYERS_B], dtype=float)
    np.testing.assert_allclose(image.get_array().filled(np.nan), n_pairs_any)
    assert n_pairs.shape == n_pairs_any.shape
    before, after = _images(figures.mean_correlation_heatmap(table, LABELS))
    np.testing.assert_allclose(before.get_array(), _plain_grid(one_metric, "rsa", "mean_corr_before"))
    np.testing.assert_allclose(after.get_array(), _plain_grid(one_metric, "rsa", "mean_corr_after"))


def test_null_histograms_draw_the_null_and_the_observed_value(synthetic):
    table = synthetic["tables"]["main"]
    rows = table[table["metric"] == "svcca"]
    cells = figures.select_null_cells(rows, 3)
    scored = rows[rows["status"] == "scored"]
    assert len(cells) == 3 and "A2_B1" not in cells  # the not-scored cell has no null
    assert scored.loc[scored["z"].idxmax(), "cell"] in cells and scored.loc[scored["z"].idxmin(), "cell"] in cells
    nulls = figure_targets.null_draws(synthetic["scores"]["main"], "svcca", cells)
    figure = figures.null_histograms(table, "svcca", nulls, 3, LABELS)
    assert len(figure.axes) == 3
    for ax, cell in zip(figure.axes, cells):
        (histogram,) = ax.patches  # one filled step patch per panel
        assert histogram.get_data().values.sum() == len(nulls[cell]) == 199
        observed = rows.set_index("cell").loc[cell, "observed"]
        assert any(np.allclose(line.get_xdata(), observed) for line in ax.get_lines())
        assert ax.get_title().startswith(cell)
    assert len(figures.null_histograms(table, "svcca", {}, 0, LABELS).axes) == 0
    assert len(figures.select_null_cells(rows, 100)) == len(scored)


def test_semantic_grid_is_concept_by_layer_pair(synthetic):
    table = synthetic["semantic"]["main"]
    figure = figures.semantic_grid_figure(table, "svcca", LABELS)
    observed, z_values, n_pairs = _images(figure)
    cells = [f"A{la}_B{lb}" for la in LAYERS_A for lb in LAYERS_B]
    assert observed.get_array().shape == (3, len(cells))
    rows = table[table["metric"] == "svcca"].set_index(["concept", "cell"])
    for i, concept in enumerate(["animal", "color", "month"]):
        for j, cell in enumerate(cells):
            row = rows.loc[(concept, cell)]
            if row["status"] in ("scored", "underpowered"):  # underpowered cells keep their values
                assert observed.get_array()[i, j] == pytest.approx(row["observed"])
                assert z_values.get_array()[i, j] == pytest.approx(row["z"])
            else:
                assert observed.get_array().mask[i, j]
            assert n_pairs.get_array()[i, j] == row["n_pairs"]
    assert [t.get_text() for t in figure.axes[0].get_yticklabels()] == ["animal", "color", "month"]
    # 17 cells with p >= 1/200 in one Holm family: p_min_adjusted = 17/200 >= 0.05, so every one is underpowered
    assert rows["status"].value_counts().to_dict() == {"underpowered": 17, "not_scored": 1}
    panels = [ax for ax in figure.axes if ax.get_images()]  # the three grids, not their colourbars
    for ax in panels[:2]:  # observed and z panels: hatched, "u/p" under the value, never a star
        assert len([patch for patch in ax.patches if patch.get_hatch()]) == 17
        texts = [t.get_text() for t in ax.texts]
        assert sum(text.endswith("\nu/p") for text in texts) == 17 and texts.count("n/s") == 1
        assert not any("*" in text for text in texts)
    legend = [t.get_text() for t in figure.legends[0].get_texts()]
    assert any(text.startswith("u/p: underpowered") for text in legend)
    assert any(text.startswith("n/s: not scored") for text in legend)


def test_many_to_one_bars_equal_the_diagnostics(synthetic):
    candidates, final = figure_targets.pair_histograms(synthetic["diagnostics"]["main"])
    figure = figures.many_to_one_figure(candidates, final, LABELS)
    ax = figure.axes[0]
    record = json.loads(synthetic["diagnostics"]["main"][0].read_text())
    expected = many_to_one_histogram(record)
    multiplicities = sorted({n for hist in candidates.values() for n in hist})
    first_cell_bars = ax.containers[0]  # layer pair A0_B0, one bar per multiplicity
    assert [bar.get_height() for bar in first_cell_bars] == [expected.get(n, 0) for n in multiplicities]
    assert len(ax.containers) == len(LAYERS_A) * len(LAYERS_B)


def test_comparison_figures_plot_every_comparison(synthetic, tmp_path):
    tables = synthetic["tables"]
    figure = figures.comparison_figure(tables, "svcca", "one_to_one", {"control": "permuted concepts"})
    ax_obs, ax_z = figure.axes
    observed_points = [line for line in ax_obs.get_lines() if len(line.get_xdata()) == 1]
    n_scored = sum((t[t["metric"] == "svcca"]["status"] == "scored").sum() for t in tables.values())
    assert len(observed_points) == n_scored
    drawn = sorted(float(line.get_ydata()[0]) for line in observed_points)
    expected = sorted(v for t in tables.values() for v in t[(t["metric"] == "svcca") & (t["status"] == "scored")]["observed"])
    np.testing.assert_allclose(drawn, expected)
    assert sum(len(c) for c in ax_z.containers) == n_scored
    legend = [text.get_text() for text in ax_obs.get_legend().get_texts()]
    assert "control (permuted concepts)" in legend and "main" in legend
    semantic = figures.semantic_comparison_figure(synthetic["semantic"], "rsa", "one_to_one")
    assert len(semantic.axes) == 3
    assert [t.get_text() for t in semantic.axes[2].get_xticklabels()] == ["animal", "color", "month"]
    pairs = figures.pairs_comparison_figure(tables, "one_to_one")
    assert sum(len(c) for c in pairs.axes[0].containers) == len(tables) * len(LAYERS_A) * len(LAYERS_B)
    outputs = [tmp_path / f"cmp_{m}.png" for m in METRICS]
    figure_targets.write_comparison_figures(tables, "one_to_one", METRICS, outputs, {}, "holm",
                                     pairs_output=tmp_path / "pairs.png")
    assert all(p.stat().st_size > 5000 for p in outputs + [tmp_path / "pairs.png"])


def test_write_layer_figures_writes_every_output(synthetic, tmp_path):
    outputs = {key: [tmp_path / f"{m}_{key}.png" for m in METRICS] for key in ("observed", "z", "null")}
    outputs.update({key: tmp_path / f"{key}.png" for key in ("n_pairs", "correlation", "many_to_one")})
    figure_targets.write_layer_figures(synthetic["tables"]["main"], synthetic["scores"]["main"],
                                synthetic["diagnostics"]["main"], LABELS, METRICS, outputs, n_null_cells=2)
    written = sorted(p.name for p in tmp_path.iterdir())
    assert len(written) == 3 * len(METRICS) + 3 and all((tmp_path / name).stat().st_size > 5000 for name in written)
    with pytest.raises(ValueError, match="metrics"):
        figure_targets.write_layer_figures(synthetic["tables"]["main"], [], [], LABELS, ["svcca"], outputs, 1)


def test_unknown_metric_is_named(synthetic):
    with pytest.raises(ValueError, match="no rows for metric 'cka'"):
        figures.observed_heatmap(synthetic["tables"]["main"], "cka", LABELS)


def test_scored_cell_without_finite_z_reads_na_not_not_scored(synthetic):
    table = synthetic["tables"]["main"].copy()
    degenerate = (table["metric"] == "rsa") & (table["cell"] == "A0_B0")
    table.loc[degenerate, "z"] = np.nan  # a zero-width null: the score json stores z as null
    figure = figures.z_heatmap(table, "rsa", LABELS)
    texts = [t.get_text() for t in figure.axes[0].texts]
    assert texts.count("n/a") == 1 and texts.count("n/s") == 0
    assert len(figures.select_null_cells(table[table["metric"] == "rsa"], 6)) == 6


def test_underpowered_cell_is_hatched_and_never_marked_in_heatmaps_and_comparisons(synthetic):
    table = synthetic["tables"]["main"].copy()
    weak = (table["metric"] == "rsa") & (table["cell"] == "A1_B0")
    table.loc[weak, ["status", "p_adjusted", "significant"]] = ["underpowered", 0.0001, False]  # tiny p: still no star
    figure = figures.observed_heatmap(table, "rsa", LABELS)
    ax = figure.axes[0]
    (image,) = ax.get_images()
    assert image.get_array()[LAYERS_B.index(0), LAYERS_A.index(1)] == pytest.approx(table.loc[weak, "observed"].iloc[0])
    hatched = [patch for patch in ax.patches if patch.get_hatch()]
    assert len(hatched) == 1 and hatched[0].get_xy() == (LAYERS_A.index(1) - 0.5, LAYERS_B.index(0) - 0.5)
    texts = [t.get_text() for t in ax.texts]
    assert sum(text.endswith("\nu/p") for text in texts) == 1 and not any(text.endswith("u/p*") for text in texts)
    assert [t.get_text() for t in figure.legends[0].get_texts()] == [
        "u/p: underpowered (cannot reach adjusted p < alpha)"]
    assert figures.layer_grid(table[table["metric"] == "rsa"], "observed").marks[0, 1] == ""
    # all-scored grids get no state legend
    assert not figures.observed_heatmap(synthetic["tables"]["main"], "rsa", LABELS).legends
    comparison = figures.comparison_figure({"main": table}, "rsa", "one_to_one")
    squares = [line for line in comparison.axes[0].get_lines()
               if line.get_marker() == "s" and len(line.get_xdata()) == 1]
    assert len(squares) == 1 and squares[0].get_markerfacecolor() == "white"
    assert sum(bool(bar.get_hatch()) for container in comparison.axes[1].containers for bar in container) == 1
