"""Held-out split (reference-method B32): pairing reads one set of sequences, labels the other."""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from featsim.correlate import max_correlation
from featsim.errors import ConfigError
from featsim.labels import LabelsConfig, latent_stats
from featsim.parquet import read_parquet_provenance
from featsim.split import heldout_sequences, token_split
from featsim.stores import open_tokens, write_codes
from featsim.targets.labels import write_labels
from test_correlate import assert_matches_oracle, random_codes
from test_labels import make_token_store, random_codes as random_dense_codes, word_tokenizer  # noqa: F401 (fixture)


def test_heldout_sequences_are_an_exact_seeded_share():
    heldout = heldout_sequences(50, 0.2, seed=3)
    assert heldout.dtype == bool and heldout.sum() == 10
    np.testing.assert_array_equal(heldout, heldout_sequences(50, 0.2, seed=3))
    assert not np.array_equal(heldout, heldout_sequences(50, 0.2, seed=4))
    assert heldout_sequences(50, 0.0, seed=3).sum() == 0
    with pytest.raises(ConfigError, match="data.heldout_fraction"):
        heldout_sequences(3, 0.1, seed=0)  # rounds to no held-out sequence
    with pytest.raises(ConfigError, match="data.heldout_fraction"):
        heldout_sequences(10, 1.0, seed=0)


def test_rows_follow_their_sequence():
    context_length, n_sequences = 8, 20
    positions = np.flatnonzero(np.random.default_rng(0).random(n_sequences * context_length) > 0.3)
    split = token_split(positions, context_length, n_sequences, 0.25, seed=1)
    heldout = heldout_sequences(n_sequences, 0.25, seed=1)
    np.testing.assert_array_equal(split.label_rows, heldout[positions // context_length])
    np.testing.assert_array_equal(split.pair_rows, ~split.label_rows)
    assert split.describe()["n_heldout_sequences"] == 5
    assert split.describe()["n_pair_rows"] + split.describe()["n_label_rows"] == positions.size
    np.testing.assert_array_equal(split.pair_selection, split.pair_rows)
    same = token_split(positions, context_length, n_sequences, 0.0, seed=1)
    assert same.pair_rows.all() and same.label_rows.all()  # the study's choice: every row for both
    assert same.pair_selection is None and same.label_selection is None  # readers skip the row selection


def test_correlation_over_pair_rows_equals_correlating_those_rows():
    rng = np.random.default_rng(5)
    codes_a, codes_b = random_codes(rng, 400, 30, 0.2), random_codes(rng, 400, 24, 0.25)
    rows = rng.random(400) > 0.3
    result = max_correlation(codes_a, codes_b, top_k=3, min_active=2, rows=rows)
    assert result.n_tokens == rows.sum()
    assert_matches_oracle(result, codes_a[rows], codes_b[rows], min_active=2, top_k=3)
    with pytest.raises(ValueError, match="no token row"):
        max_correlation(codes_a, codes_b, rows=np.zeros(400, bool))
    with pytest.raises(ValueError, match="bool mask"):
        max_correlation(codes_a, codes_b, rows=np.ones(399, bool))


def test_label_statistics_over_heldout_rows_keep_code_store_numbering():
    dense = random_dense_codes(200, 16, seed=6)
    rows = np.random.default_rng(7).random(200) > 0.6
    stats = latent_stats(sp.csr_matrix(dense), 4, rows_per_chunk=33, progress=False, rows=rows)
    subset = latent_stats(sp.csr_matrix(dense[rows]), 4, progress=False)
    kept = np.flatnonzero(rows)
    np.testing.assert_array_equal(stats.top_rows, np.where(subset.top_rows >= 0, kept[subset.top_rows], -1))
    np.testing.assert_array_equal(stats.top_values, subset.top_values)
    np.testing.assert_array_equal(stats.n_active, subset.n_active)
    np.testing.assert_allclose(stats.mean_act, subset.mean_act)
    assert stats.n_tokens == rows.sum()


def test_labels_come_from_heldout_sequences_only(tmp_path, word_tokenizer):  # noqa: F811 (fixture)
    tokens = make_token_store(tmp_path, word_tokenizer, np.random.default_rng(8))
    dense = random_dense_codes(tokens.n_unmasked, 6, seed=9)
    write_codes(tmp_path / "codes.zarr", dense, {"config_hash": "c"})
    out = tmp_path / "labels.parquet"
    split_config = {"heldout_fraction": 0.34, "seed": 2}  # one of the store's 3 sequences
    table = write_labels(tmp_path / "codes.zarr", tmp_path / "tokens.zarr", out, LabelsConfig(top_k=4),
                         split_config=split_config)
    heldout = heldout_sequences(3, 0.34, seed=2)
    context_length = open_tokens(tmp_path / "tokens.zarr").context_length
    for positions in table["top_positions"]:
        assert heldout[np.asarray(positions, dtype=np.int64) // context_length].all()
    provenance = read_parquet_provenance(out)
    assert provenance["split"]["n_heldout_sequences"] == 1
    assert provenance["n_tokens"] == provenance["split"]["n_label_rows"] < tokens.n_unmasked
    assert pd.read_parquet(out)["latent"].tolist() == table["latent"].tolist() == list(range(6))
