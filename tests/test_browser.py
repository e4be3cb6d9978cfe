"""Pair browser: top pairs, per-token activations streamed from code stores, the HTML page and scatter."""

import re

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from featsim.browser import (BrowserSettings, browser_page, labels_index, pair_activations, pearson, scatter_figure,
                             top_pairs)
from featsim.stores import open_codes, write_codes
from featsim.targets.figures import build_browser

N_TOKENS, D_A, D_B = 500, 12, 9


@pytest.fixture
def stores(tmp_path):
    """Two code stores over the same 500 tokens; B latent 3 is A latent 5 scaled, plus noise elsewhere."""
    rng = np.random.default_rng(0)
    codes_a = sp.random(N_TOKENS, D_A, density=0.15, random_state=rng, format="csc", dtype=np.float32).toarray()
    codes_b = sp.random(N_TOKENS, D_B, density=0.15, random_state=rng, format="csc", dtype=np.float32).toarray()
    codes_b[:, 3] = 2.0 * codes_a[:, 5]
    write_codes(tmp_path / "a.zarr", codes_a, {"model": "A"})
    write_codes(tmp_path / "b.zarr", codes_b, {"model": "B"})
    return tmp_path, codes_a, codes_b


def _labels(d_sae: int, side: str) -> pd.DataFrame:
    return pd.DataFrame({
        "latent": np.arange(d_sae),
        "n_active": np.arange(d_sae) + 10,
        "top_values": [[3.0, 2.0, 1.0] for _ in range(d_sae)],
        "top_tokens": [[f"{side}tok{i}", f"{side}tok{i}", "\n"] for i in range(d_sae)],
        "top_contexts": [[f"the {side} context <{i}> of [[{side}tok{i}]] here", f"again [[{side}tok{i}]] & more",
                          "a newline [[\\n]] token"] for i in range(d_sae)],
    })


def test_top_pairs_sorted_by_correlation_with_ties_by_latent():
    pairs = pd.DataFrame({"a": [4, 1, 2, 0], "b": [0, 1, 2, 3], "corr": [0.5, 0.9, 0.5, 0.7]})
    top = top_pairs(pairs, 3)
    assert top[["a", "b"]].values.tolist() == [[1, 1], [0, 3], [2, 2]]
    assert top_pairs(pairs, 0).empty
    with pytest.raises(ValueError, match="corr"):
        top_pairs(pairs.drop(columns="corr"), 2)


def test_pair_activations_equal_dense_columns(stores):
    path, codes_a, codes_b = stores
    values_a, values_b = pair_activations(open_codes(path / "a.zarr"), open_codes(path / "b.zarr"), [5, 0], [3, 8],
                                          rows=64)  # several chunks
    np.testing.assert_array_equal(values_a, codes_a[:, [5, 0]])
    np.testing.assert_array_equal(values_b, codes_b[:, [3, 8]])
    assert pearson(values_a[:, 0], values_b[:, 0]) == pytest.approx(1.0)
    assert pearson(values_a[:, 1], values_b[:, 1]) == pytest.approx(np.corrcoef(codes_a[:, 0], codes_b[:, 8])[0, 1])


def test_scatter_draws_every_token_where_a_latent_fires(stores):
    _, codes_a, codes_b = stores
    pairs = pd.DataFrame({"a": [5, 0], "b": [3, 8], "corr": [1.0, 0.1]})
    figure = scatter_figure(codes_a[:, [5, 0]], codes_b[:, [3, 8]], pairs, "title")
    assert len(figure.axes) == 2
    firing = ((codes_a[:, 5] != 0) | (codes_b[:, 3] != 0)).sum()
    assert len(figure.axes[0].collections[0].get_offsets()) == firing
    assert "recomputed 1.00" in figure.axes[0].get_title()
    assert len(scatter_figure(codes_a[:, []], codes_b[:, []], pairs.head(0), "t").axes) == 0


def test_page_shows_both_latents_contexts_side_by_side():
    pairs = pd.DataFrame({"a": [5], "b": [3], "corr": [0.93], "mutual": [True]})
    page = browser_page(pairs, labels_index(_labels(D_A, "A")), labels_index(_labels(D_B, "B")), "cmp A0/B1",
                        scatter_png=b"\x89PNG fake", n_contexts=2, provenance={"config_hash": "x"})
    row = re.search(r"<tbody>(.*)</tbody>", page, re.S).group(1)
    assert row.index("<mark>Atok5</mark>") < row.index("<mark>Btok3</mark>")  # a's cell, then b's cell
    assert "the A context &lt;5&gt; of <mark>Atok5</mark> here" in row  # text escaped, token marked
    assert "again <mark>Btok3</mark> &amp; more" in row
    assert "newline" not in row  # only n_contexts=2 contexts per latent
    assert "Atok5&times;2" in row and "0.930" in row and "mutual best" in row
    assert "data:image/png;base64," in page and '"config_hash": "x"' in page
    missing = browser_page(pd.DataFrame({"a": [99], "b": [3], "corr": [0.5]}), {}, labels_index(_labels(D_B, "B")), "t")
    assert "no labels for this latent" in missing


def test_build_browser_writes_page_and_scatter(stores):
    path, codes_a, codes_b = stores
    pairs = pd.DataFrame({"a": [5, 1, 2], "b": [3, 0, 1], "corr": [1.0, 0.4, 0.6]})
    pairs.to_parquet(path / "A0_B1.parquet")
    _labels(D_A, "A").to_parquet(path / "labels_a.parquet")
    _labels(D_B, "B").to_parquet(path / "labels_b.parquet")
    listed = build_browser(path / "A0_B1.parquet", path / "labels_a.parquet", path / "labels_b.parquet",
                           open_codes(path / "a.zarr"), open_codes(path / "b.zarr"), path / "out" / "A0_B1.html",
                           path / "out" / "A0_B1.scatter.png", BrowserSettings(browser_pairs=2, scatter_pairs=1),
                           "main / one_to_one: A layer 0 vs B layer 1")
    assert listed[["a", "b"]].values.tolist() == [[5, 3], [2, 1]]
    page = (path / "out" / "A0_B1.html").read_text()
    assert "<mark>Atok5</mark>" in page and "<mark>Btok3</mark>" in page and "<mark>Atok2</mark>" in page
    assert "Atok1<" not in page  # the third pair is not listed
    assert (path / "out" / "A0_B1.scatter.png").stat().st_size > 3000
    assert sorted(p.name for p in (path / "out").iterdir()) == ["A0_B1.html", "A0_B1.scatter.png"]


def test_browser_scatter_uses_only_the_given_rows(stores, monkeypatch):
    path, codes_a, codes_b = stores
    pd.DataFrame({"a": [5], "b": [3], "corr": [1.0]}).to_parquet(path / "pairs.parquet")
    _labels(D_A, "A").to_parquet(path / "labels_a.parquet")
    _labels(D_B, "B").to_parquet(path / "labels_b.parquet")
    drawn = {}

    def recording_scatter(values_a, values_b, pairs, title, seed=0):
        drawn["shape"] = values_a.shape
        drawn["values"] = values_a[:, 0].copy()
        return scatter_figure(values_a, values_b, pairs, title, seed)

    monkeypatch.setattr("featsim.targets.figures.scatter_figure", recording_scatter)
    rows = np.arange(N_TOKENS) % 3 == 0
    build_browser(path / "pairs.parquet", path / "labels_a.parquet", path / "labels_b.parquet",
                  open_codes(path / "a.zarr"), open_codes(path / "b.zarr"), path / "p.html", path / "p.png",
                  BrowserSettings(browser_pairs=1, scatter_pairs=1), "rows", rows=rows)
    assert drawn["shape"] == (rows.sum(), 1)
    np.testing.assert_array_equal(drawn["values"], codes_a[rows, 5])


def test_settings_from_report_config():
    assert BrowserSettings.from_config({"browser_pairs": 7, "scatter_pairs": 2, "null_histograms": 4}) == \
        BrowserSettings(browser_pairs=7, scatter_pairs=2)
    assert BrowserSettings.from_config(None) == BrowserSettings()
