"""Scoring one cell: records, not-scored cells, per-cell seeds, and the files the `score` rule writes."""

import hashlib
import json

import numpy as np
import pandas as pd
import pytest

from featsim.layout import NULL, sibling
from featsim.metrics import METRICS
from featsim.null import permutation_test
from featsim.parquet import write_parquet
from featsim.scoring import cell_seed, load_pairs, score_pairs, score_pairs_with_null
from featsim.summary import read_score
from featsim.targets.scoring import score_cell


def decoders_and_pairs(n_pairs=30, seed=0):
    """Two decoders whose paired rows share a planted 3-dim structure; the rest are noise latents."""
    rng = np.random.default_rng(seed)
    decoder_a = rng.standard_normal((64, 8)).astype(np.float32)
    decoder_b = rng.standard_normal((80, 10)).astype(np.float32)
    pairs_a = rng.choice(64, n_pairs, replace=False)
    pairs_b = rng.choice(80, n_pairs, replace=False)
    latent = rng.standard_normal((n_pairs, 3))
    decoder_a[pairs_a] += (latent @ rng.standard_normal((3, 8))).astype(np.float32)
    decoder_b[pairs_b] += (latent @ rng.standard_normal((3, 10))).astype(np.float32)
    return decoder_a, decoder_b, pairs_a, pairs_b


def test_score_pairs_is_the_permutation_test_of_the_paired_rows():
    decoder_a, decoder_b, pairs_a, pairs_b = decoders_and_pairs()
    record, null = score_pairs_with_null(decoder_a, decoder_b, pairs_a, pairs_b, "svcca", 50, 7, {"threshold": 0.9})
    expected = permutation_test(decoder_a[pairs_a], decoder_b[pairs_b], "svcca", 50, 7, options={"threshold": 0.9})
    np.testing.assert_array_equal(null, expected.null)
    assert record["status"] == "scored" and record["reason"] == ""
    assert record["observed"] == expected.observed and record["p_value"] == expected.p_value
    assert (record["k_a"], record["k_b"]) == (expected.details["k_a"], expected.details["k_b"])
    assert record["n_pairs"] == 30 and record["n_permutations"] == 50 and record["seed"] == 7
    assert record["invariances"] == sorted(METRICS["svcca"].invariances)
    assert record["options"] == {"threshold": 0.9, "k": None}
    json.dumps(record, allow_nan=False)


@pytest.mark.parametrize("n_pairs", [0, 1, 2])
def test_fewer_than_three_pairs_is_recorded_as_not_scored(n_pairs):
    decoder_a, decoder_b, pairs_a, pairs_b = decoders_and_pairs()
    record, null = score_pairs_with_null(decoder_a, decoder_b, pairs_a[:n_pairs], pairs_b[:n_pairs], "rsa", 20, 0)
    assert record["status"] == "not_scored" and "at least 3" in record["reason"]
    assert record["n_pairs"] == n_pairs and record["p_value"] is None and null.size == 0
    json.dumps(record, allow_nan=False)


def test_metric_specific_minimum_is_not_scored_with_its_reason():
    decoder_a, decoder_b, pairs_a, pairs_b = decoders_and_pairs(n_pairs=8)
    record = score_pairs(decoder_a, decoder_b, pairs_a, pairs_b, "mutual_knn", 20, 0)
    assert record["status"] == "not_scored" and "k=10" in record["reason"]
    assert score_pairs(decoder_a, decoder_b, pairs_a, pairs_b, "mutual_knn", 20, 0, {"k": 3})["status"] == "scored"


def test_pairs_outside_the_decoder_are_an_error():
    decoder_a, decoder_b, pairs_a, pairs_b = decoders_and_pairs()
    pairs_b = pairs_b.copy()
    pairs_b[0] = 80
    with pytest.raises(ValueError, match="column 'b'"):
        score_pairs(decoder_a, decoder_b, pairs_a, pairs_b, "cka", 10, 0)


def test_cell_seed_is_stable_and_distinct_per_cell():
    seed = cell_seed(0, "main", "one_to_one", "A0_B1")
    assert seed == cell_seed(0, "main", "one_to_one", "A0_B1")
    assert 0 <= seed < 2**63
    others = {cell_seed(0, "main", "one_to_one", "A1_B0"), cell_seed(1, "main", "one_to_one", "A0_B1"),
              cell_seed(0, "control", "one_to_one", "A0_B1"), cell_seed(0, "main", "mutual", "A0_B1")}
    assert seed not in others and len(others) == 4
    # the documented derivation, pinned: changing it would change every stored null
    digest = hashlib.sha256(b"featsim-null/0/main/one_to_one/A0_B1").digest()
    assert seed == int.from_bytes(digest[:8], "little") & (2**63 - 1)


def test_score_cell_writes_json_and_null_with_provenance(tmp_path):
    decoder_a, decoder_b, pairs_a, pairs_b = decoders_and_pairs()
    np.save(tmp_path / "decoder_a.npy", decoder_a)
    np.save(tmp_path / "decoder_b.npy", decoder_b)
    pairs_file = tmp_path / "pairs" / "A0_B1.parquet"
    frame = pd.DataFrame({"a": pairs_a, "b": pairs_b, "corr": np.linspace(0.9, 0.2, len(pairs_a))})
    write_parquet(pairs_file, frame, {"config_hash": "pairs-hash", "pairing": "one_to_one"})
    score_file = tmp_path / "scores" / "cka" / "A0_B1.json"
    identity = {"experiment": "toy", "comparison": "main", "pairing": "one_to_one", "layer_a": 0, "layer_b": 1}
    record = score_cell(pairs_file, tmp_path / "decoder_a.npy", tmp_path / "decoder_b.npy", score_file,
                        sibling(score_file, NULL), metric="cka", null_config={"permutations": 99, "seed": 3},
                        metric_options={}, ids=identity)

    written = json.loads(score_file.read_text())
    seed = cell_seed(3, "main", "one_to_one", "A0_B1")
    assert written["seed"] == seed and written["base_seed"] == 3
    assert written["provenance"]["pairs"]["config_hash"] == "pairs-hash"
    assert written["provenance"]["comparison"] == "main" and written["provenance"]["metric"] == "cka"
    assert len(written["provenance"]["config_hash"]) == 16
    null = np.load(sibling(score_file, NULL))
    expected = permutation_test(decoder_a[pairs_a], decoder_b[pairs_b], "cka", 99, seed)
    np.testing.assert_array_equal(null, expected.null)
    assert record["p_value"] == expected.p_value == pytest.approx(0.01)
    row = read_score(score_file)  # the summary stage accepts the record
    assert row["status"] == "scored" and row["p_min"] == pytest.approx(0.01)
    assert not list(tmp_path.rglob("*.tmp-*"))


def test_load_pairs_names_the_file_when_columns_are_missing(tmp_path):
    path = tmp_path / "A0_B0.parquet"
    write_parquet(path, pd.DataFrame({"a": [1, 2], "corr": [0.5, 0.4]}), {})
    with pytest.raises(ValueError, match="A0_B0.parquet"):
        load_pairs(path)


def test_three_pairs_are_underpowered_in_the_json_and_the_summary_reads_it(tmp_path):
    decoder_a, decoder_b, pairs_a, pairs_b = decoders_and_pairs(n_pairs=3)
    np.save(tmp_path / "decoder_a.npy", decoder_a)
    np.save(tmp_path / "decoder_b.npy", decoder_b)
    pairs_file = tmp_path / "A0_B0.parquet"
    write_parquet(pairs_file, pd.DataFrame({"a": pairs_a, "b": pairs_b}), {})
    score_file = tmp_path / "cka" / "A0_B0.json"
    identity = {"experiment": "toy", "comparison": "main", "pairing": "one_to_one", "layer_a": 0, "layer_b": 0}
    score_cell(pairs_file, tmp_path / "decoder_a.npy", tmp_path / "decoder_b.npy", score_file, sibling(score_file, NULL),
               metric="cka", null_config={"permutations": 1000}, metric_options={}, ids=identity)
    written = json.loads(score_file.read_text())
    # 3 pairs have 3! = 6 orderings: the exact null holds the other 5, and no p can be below 1/6 > alpha
    assert written["status"] == "underpowered" and "1/n!" in written["reason"] and "0.05" in written["reason"]
    assert written["p_min"] == pytest.approx(1 / 6) and written["n_permutations"] == 5 and written["null_exact"]
    assert written["p_value"] >= written["p_min"] and written["observed"] is not None
    row = read_score(score_file)
    assert row["status"] == "underpowered" and row["p_min"] == pytest.approx(1 / 6)


def test_degenerate_svcca_is_not_scored_with_its_components_and_fixed_k_scores_it():
    decoder_a, decoder_b, pairs_a, pairs_b = decoders_and_pairs(n_pairs=8)  # 8 pairs in 8 and 10 dims
    record, null = score_pairs_with_null(decoder_a, decoder_b, pairs_a, pairs_b, "svcca", 50, 0)
    # oracle: 99% of the centred variance needs most of the 7 directions 8 centred rows span, on each side
    def kept(rows):
        energy = np.linalg.svd(rows - rows.mean(axis=0), compute_uv=False) ** 2
        return int(np.searchsorted(np.cumsum(energy) / energy.sum(), 0.99) + 1)
    k_a, k_b = kept(decoder_a[pairs_a].astype(float)), kept(decoder_b[pairs_b].astype(float))
    assert k_a + k_b >= 8 - 1
    assert record["status"] == "not_scored" and (record["k_a"], record["k_b"]) == (k_a, k_b)
    assert "metric_options.svcca.k" in record["reason"] and record["p_value"] is None and null.size == 0
    fixed = score_pairs(decoder_a, decoder_b, pairs_a, pairs_b, "svcca", 50, 0, {"k": 2})
    assert fixed["status"] == "scored" and (fixed["k_a"], fixed["k_b"], fixed["k"]) == (2, 2, 2)
    assert fixed["p_min"] == pytest.approx(1 / 51)
    json.dumps(record, allow_nan=False)
