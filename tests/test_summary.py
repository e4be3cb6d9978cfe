"""Summary tables: synthetic score jsons -> rows, adjusted p against statsmodels, provenance beside the CSV."""

import itertools
import json

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.multitest import multipletests
from synthetic_results import write_pairs, write_scores, write_semantic

from featsim.layout import DIAGNOSTICS, NULL, PROVENANCE, sibling
from featsim.provenance import config_hash
from featsim.summary import (SCORE_COLUMNS, comparison_overview, many_to_one_histogram, read_pair_diagnostics,
                             read_score, read_summary, significance_marks, summarize, summary_html)
from featsim.targets.summary import write_summary

METRICS = ["svcca", "rsa"]
LAYERS_A, LAYERS_B = [0, 1], [0, 1, 2]


@pytest.fixture
def results(tmp_path):
    """Score jsons (one svcca cell not scored) and pairs diagnostics of a 2 x 3 layer grid."""
    scores = write_scores(tmp_path, "main", "one_to_one", METRICS, LAYERS_A, LAYERS_B,
                          not_scored={("svcca", 1, 2)})
    pairs, correlations = write_pairs(tmp_path, "main", "one_to_one", LAYERS_A, LAYERS_B)
    diagnostics = [sibling(p, DIAGNOSTICS) for p in pairs]
    return scores, diagnostics, correlations


def test_one_row_per_layer_pair_and_metric_with_values_carried(results):
    scores, diagnostics, _ = results
    table = summarize(scores, diagnostics, "main", "one_to_one", "holm")
    assert len(table) == len(METRICS) * len(LAYERS_A) * len(LAYERS_B)
    assert list(table.columns[: len(SCORE_COLUMNS)]) == SCORE_COLUMNS
    assert not table.duplicated(["metric", "layer_a", "layer_b"]).any()
    for path in scores:
        record = json.loads(path.read_text())
        la, lb = record["provenance"]["layer_a"], record["provenance"]["layer_b"]
        row = table[(table["metric"] == record["metric"]) & (table["layer_a"] == la) & (table["layer_b"] == lb)].iloc[0]
        assert row["status"] == record["status"]
        assert row["n_pairs"] == record["n_pairs"] and row["n_permutations"] == record["n_permutations"]
        if record["status"] == "scored":
            for key in ("observed", "null_mean", "null_std", "z", "p_value"):
                assert row[key] == pytest.approx(record[key])
            assert row["seed"] == record["seed"]
            assert row["flags"] == ";".join(record["flags"])
    svcca = table[table["metric"] == "svcca"]
    assert (svcca["k_a"].dropna() == 12).all() and (svcca["k_b"].dropna() == 14).all()
    assert table[table["metric"] == "rsa"]["k_a"].isna().all()


def test_not_scored_cell_is_carried_with_reason_and_no_adjusted_p(results):
    scores, diagnostics, _ = results
    table = summarize(scores, diagnostics, "main", "one_to_one", "holm")
    row = table[(table["metric"] == "svcca") & (table["cell"] == "A1_B2")].iloc[0]
    assert row["status"] == "not_scored" and row["reason"] == "fewer than 3 pairs"
    assert np.isnan(row["p_value"]) and np.isnan(row["p_holm"]) and np.isnan(row["p_bh"])
    assert not row["significant"]
    assert (table.loc[table["metric"] == "svcca", "family_size"] == 5).all()
    assert (table.loc[table["metric"] == "rsa", "family_size"] == 6).all()


@pytest.mark.parametrize("correction", ["holm", "bh"])
def test_adjusted_p_match_statsmodels_per_metric_family(results, correction):
    scores, diagnostics, _ = results
    table = summarize(scores, diagnostics, "main", "one_to_one", correction)
    for metric in METRICS:
        scored = table[(table["metric"] == metric) & (table["status"] == "scored")]
        _, holm, _, _ = multipletests(scored["p_value"].to_numpy(), method="holm")
        _, bh, _, _ = multipletests(scored["p_value"].to_numpy(), method="fdr_bh")
        np.testing.assert_allclose(scored["p_holm"], holm, rtol=1e-12)
        np.testing.assert_allclose(scored["p_bh"], bh, rtol=1e-12)
        chosen = holm if correction == "holm" else bh
        np.testing.assert_allclose(scored["p_adjusted"], chosen, rtol=1e-12)
        assert (scored["significant"] == (chosen < 0.05)).all()
        assert (scored["correction"] == correction).all()
        assert scored["family"].nunique() == 1
        family = scored["family"].iloc[0]
        assert f"metric={metric}" in family and "comparison=main" in family and "layer pairs" in family


def test_p_floor_kept_and_below_floor_rejected(results, tmp_path):
    scores, diagnostics, _ = results
    table = summarize(scores, diagnostics, "main", "one_to_one", "holm")
    scored = table[table["status"] == "scored"]
    assert (scored["p_min"] == 1 / (199 + 1)).all()
    assert (scored["p_value"] >= scored["p_min"]).all()
    assert (scored["p_holm"] >= scored["p_value"] - 1e-15).all() and (scored["p_bh"] >= scored["p_value"] - 1e-15).all()
    bad = tmp_path / "A0_B0.json"
    record = json.loads(scores[0].read_text())
    record.update(status="scored", p_value=1 / 1000, n_permutations=199)
    bad.write_text(json.dumps(record))
    with pytest.raises(ValueError, match=r"below its floor max\(1/\(m\+1\), 1/n!\)"):
        read_score(bad)


def test_pair_diagnostics_joined_from_pairing_output(results):
    scores, diagnostics, correlations = results
    table = summarize(scores, diagnostics, "main", "one_to_one", "holm")
    for (la, lb), corr in correlations.items():
        live = corr.best_a_for_b >= 0
        expected_before = corr.best_corr_for_b[live].mean()
        pairs = pd.read_parquet(diagnostics[0].parent / f"A{la}_B{lb}.parquet")
        rows = table[table["cell"] == f"A{la}_B{lb}"]
        np.testing.assert_allclose(rows["mean_corr_before"], expected_before)
        np.testing.assert_allclose(rows["mean_corr_after"], pairs["corr"].mean())
        assert rows["filter_counts"].iloc[0].startswith("candidates:")
    record = read_pair_diagnostics(diagnostics[0])
    histogram = many_to_one_histogram(record)
    assert sum(n * count for n, count in histogram.items()) == int(record["filter_counts"][0]["n_pairs"])


def test_semantic_rows_adjusted_over_concept_by_layer_grid(tmp_path):
    concepts = ["animal", "color", "month"]
    paths = write_semantic(tmp_path, "main", "one_to_one", concepts, METRICS, LAYERS_A, LAYERS_B,
                           not_scored={("color", "rsa", 0, 1)})
    table = summarize(paths, [], "main", "one_to_one", "bh", scope="concept")
    assert len(table) == len(concepts) * len(METRICS) * len(LAYERS_A) * len(LAYERS_B)
    assert not table.duplicated(["metric", "concept", "layer_a", "layer_b"]).any()
    for metric in METRICS:
        scored = table[(table["metric"] == metric) & (table["status"] == "scored")]
        _, bh, _, _ = multipletests(scored["p_value"].to_numpy(), method="fdr_bh")
        np.testing.assert_allclose(scored["p_bh"], bh, rtol=1e-12)
        np.testing.assert_allclose(scored["p_adjusted"], bh, rtol=1e-12)
        assert (table.loc[table["metric"] == metric, "family_size"] == len(scored)).all()
        assert "concepts x layer pairs" in scored["family"].iloc[0]
    assert (table.loc[table["metric"] == "rsa", "family_size"] == 17).all()
    animal = table[table["concept"] == "animal"].iloc[0]
    assert animal["keywords"] == "animal0:2" and animal["top_keywords_a"] == "animal0:3;animal1:1"
    assert animal["n_pairs_sharing_keyword"] == 2 and animal["concept_name"] == "Animal"
    skipped = table[(table["concept"] == "color") & (table["status"] == "not_scored")].iloc[0]
    assert skipped["keywords"] == "" and np.isnan(skipped["n_pairs_sharing_keyword"])
    assert (table["n_latents_a"] == 7).all()
    with pytest.raises(ValueError, match="concept"):
        summarize(write_scores(tmp_path / "x", "main", "one_to_one", ["svcca"], [0], [0]), [],
                  "main", "one_to_one", "holm", scope="concept")


def test_write_summary_round_trip_with_provenance_beside(results, tmp_path):
    scores, diagnostics, _ = results
    table = summarize(scores, diagnostics, "main", "one_to_one", "holm")
    out = tmp_path / "summary" / "main" / "one_to_one.csv"
    write_summary(out, table, {"correction": "holm"},
                  ids={"experiment": "toy", "comparison": "main", "pairing": "one_to_one"})
    assert sorted(p.name for p in out.parent.iterdir()) == ["one_to_one.csv", "one_to_one.provenance.json"]
    back = read_summary(out)
    pd.testing.assert_frame_equal(back[["observed", "p_holm", "p_bh"]], table[["observed", "p_holm", "p_bh"]])
    assert back.loc[back["status"] == "not_scored", "reason"].iloc[0] == "fewer than 3 pairs"
    assert (back.loc[back["metric"] == "rsa", "flags"] == "").all()
    provenance = json.loads(sibling(out, PROVENANCE).read_text())
    assert provenance["config_hash"] == config_hash({"correction": "holm"})
    assert provenance["comparison"] == "main" and provenance["n_rows"] == len(table)
    assert provenance["upstream_config_hashes"] == ["abc123"]
    assert "score_config_hash" in back.columns
    assert set(SCORE_COLUMNS) <= set(provenance["columns"])


def test_overview_counts_significant_cells_per_comparison(results, tmp_path):
    scores, diagnostics, _ = results
    main = summarize(scores, diagnostics, "main", "one_to_one", "holm")
    semantic = summarize(write_semantic(tmp_path, "main", "one_to_one", ["animal"], METRICS, [0], [0]), [],
                         "main", "one_to_one", "holm", scope="concept")
    overview = comparison_overview({"main": main}, {"main": semantic})
    assert set(overview["scope"]) == {"whole space", "concepts"}
    row = overview[(overview["scope"] == "whole space") & (overview["metric"] == "svcca")].iloc[0]
    svcca = main[(main["metric"] == "svcca") & (main["status"] == "scored")]
    assert row["n_cells"] == 6 and row["n_scored"] == 5
    assert row["n_significant"] == int((svcca["p_holm"] < 0.05).sum())
    assert row["median_z"] == pytest.approx(svcca["z"].median())


def test_marks_html_and_paths(results):
    scores, diagnostics, _ = results
    assert [significance_marks(p) for p in (0.0005, 0.005, 0.03, 0.2, float("nan"))] == ["***", "**", "*", "", ""]
    table = summarize(scores, diagnostics, "main", "one_to_one", "holm")
    page = summary_html(table, "main / one_to_one")
    assert page.count("<tr") == len(table) + 1 and "holm" in page
    assert sibling(scores[0], NULL).name == "A0_B0.null.npy" and sibling(scores[0], NULL).exists()


def test_records_written_by_featsim_scoring_summarise(tmp_path):
    """Contract with featsim.scoring: its json/null files (scored and not scored) become summary rows."""
    from featsim.scoring import score_pairs_with_null
    from featsim.targets.scoring import write_score

    rng = np.random.default_rng(3)
    decoder_a, decoder_b = rng.normal(size=(40, 8)), rng.normal(size=(50, 6))
    pairs = {(0, 0): (np.arange(30), rng.permutation(50)[:30]), (0, 1): (np.arange(2), np.arange(2))}
    paths = []
    for (la, lb), (a, b) in pairs.items():
        record, null = score_pairs_with_null(decoder_a, decoder_b, a, b, "svcca", 99, seed=la * 10 + lb,
                                             device="cpu", threads=1)
        path = tmp_path / "svcca" / f"A{la}_B{lb}.json"
        record["provenance"] = {"config_hash": "h", "metric": "svcca", "layer_a": la, "layer_b": lb}
        write_score(path, sibling(path, NULL), record, null)
        paths.append(path)
    table = summarize(paths, [], "main", "one_to_one", "holm")
    scored, skipped = table.iloc[0], table.iloc[1]
    record = json.loads(paths[0].read_text())
    assert scored["status"] == "scored" and scored["p_value"] == pytest.approx(record["p_value"])
    assert scored["k_a"] == record["k_a"] and scored["p_min"] == pytest.approx(1 / 100)
    assert scored["p_holm"] == pytest.approx(record["p_value"])  # a family of one
    assert skipped["status"] == "not_scored" and "pairs" in skipped["reason"] and np.isnan(skipped["p_holm"])
    assert len(np.load(sibling(paths[0], NULL))) == 99


def _write_cell(root, layer_a, n_pairs, m, p_value, metric="cka", status="scored"):
    """A score json of one cell with the floor featsim.null gives it: max(1/(m+1), 1/n!)."""
    import math

    record = {"status": status, "reason": "", "metric": metric, "observed": 0.9, "null_mean": 0.5, "null_std": 0.1,
              "p_value": p_value, "z": 4.0, "n_pairs": n_pairs, "n_permutations": m, "seed": 0, "flags": [],
              "p_min": max(1 / (m + 1), 1 / math.factorial(n_pairs)),
              "provenance": {"metric": metric, "layer_a": layer_a, "layer_b": 0}}
    path = root / metric / f"A{layer_a}_B0.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))
    return path


def test_smallest_attainable_holm_p_by_hand_and_underpowered_cells_are_never_significant(tmp_path):
    # n = 3 (exact null, m = 3! - 1 = 5), n = 4 (m = 23), three cells of 50 pairs with m = 1000; every p at its floor
    cells = [(3, 5, 1 / 6), (4, 23, 1 / 24), (50, 1000, 1 / 1001), (50, 1000, 1 / 1001), (50, 1000, 1 / 1001)]
    paths = [_write_cell(tmp_path, i, n, m, p) for i, (n, m, p) in enumerate(cells)]
    table = summarize(paths, [], "main", "one_to_one", "holm").sort_values("layer_a")
    # by hand: floors sorted 1/1001 (x3), 1/24, 1/6; Holm multiplies by 5, 4, 3, 2, 1 and keeps the running max
    by_hand = [max(5 / 1001, 2 / 24, 1 / 6), max(5 / 1001, 2 / 24), 5 / 1001, 5 / 1001, 5 / 1001]
    np.testing.assert_allclose(table["p_min_adjusted"], by_hand, rtol=1e-12)
    assert list(table["status"]) == ["underpowered", "underpowered", "scored", "scored", "scored"]
    assert table.iloc[1]["p_value"] < 0.05 and not table.iloc[1]["significant"]  # raw p < alpha, never significant
    assert "Holm-adjusted p is 0.0833 >= alpha 0.05" in table.iloc[1]["reason"] and "1/n!" in table.iloc[1]["reason"]
    assert list(table["significant"]) == [False, False, True, True, True]
    assert (table["family_size"] == 5).all()
    # the numbers: 32 cells with m = 1000 reach at best 32/1001 = 0.032, underpowered at alpha = 0.01
    many = [_write_cell(tmp_path / "many", i, 50, 1000, 0.5) for i in range(32)]
    grid = summarize(many, [], "main", "one_to_one", "holm", alpha=0.01)
    np.testing.assert_allclose(grid["p_min_adjusted"], 32 / 1001)
    assert (grid["status"] == "underpowered").all() and not grid["significant"].any()
    assert (summarize(many, [], "main", "one_to_one", "holm")["status"] == "scored").all()


@pytest.mark.parametrize("method, oracle", [("holm", "holm"), ("bh", "fdr_bh")])
def test_p_min_adjusted_bounds_every_attainable_outcome(method, oracle):
    from featsim.multiple_testing import smallest_adjusted_p

    floors = np.array([1 / 6, 1 / 24, 1 / 120, 1 / 1001, 1 / 1001])  # statsmodels' holm runs gc.collect(): few calls
    m_plus_1 = np.array([6, 24, 120, 1001, 1001])
    bound = smallest_adjusted_p(floors, method)
    np.testing.assert_allclose(bound, multipletests(floors, method=oracle)[1])  # attained at the floors
    for counts in itertools.product((1, 2), repeat=floors.size):  # attainable p-vectors: p_i = k_i / (m_i + 1)
        adjusted = multipletests(np.asarray(counts) / m_plus_1, method=oracle)[1]
        assert (adjusted >= bound - 1e-15).all()


def test_overview_and_html_show_underpowered_and_not_scored_apart(tmp_path):
    paths = [_write_cell(tmp_path, 0, 3, 5, 1 / 6), _write_cell(tmp_path, 1, 60, 1000, 1 / 1001)]
    skipped = tmp_path / "cka" / "A2_B0.json"
    skipped.write_text(json.dumps({"status": "not_scored", "reason": "mutual_knn with k=10 needs more than k+1 = 11 "
                                   "pairs, got 5", "metric": "cka", "n_pairs": 5, "n_permutations": 1000,
                                   "provenance": {"metric": "cka", "layer_a": 2, "layer_b": 0}}))
    table = summarize(paths + [skipped], [], "main", "one_to_one", "holm")
    row = comparison_overview({"main": table}).iloc[0]
    assert (row["n_cells"], row["n_scored"], row["n_underpowered"], row["n_not_scored"]) == (3, 1, 1, 1)
    assert row["n_significant"] == 1 and "needs more than k+N = N pairs, got N (1)" in row["not_scored_reasons"]
    page = summary_html(table, "main")
    assert page.count('class="up"') == 1 and page.count('class="ns"') == 1 and page.count('class="sig"') == 1
