"""Zarr stores: round trips, streaming reads, atomic writes, refusal of incomplete/foreign stores."""

import numpy as np
import pytest
import scipy.sparse as sp
import zarr

from featsim import stores
from featsim.parquet import read_parquet_provenance, write_parquet
from featsim.provenance import atomic_path, config_hash, make_provenance


def test_tokens_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 50, size=(7, 12)).astype(np.int32)
    mask = rng.random((7, 12)) > 0.2
    stores.write_tokens(tmp_path / "t.zarr", tokens, mask, {"tokenizer": "toy"})
    store = stores.open_tokens(tmp_path / "t.zarr")
    np.testing.assert_array_equal(store.tokens[:], tokens)
    np.testing.assert_array_equal(store.mask[:], mask)
    assert store.n_unmasked == mask.sum() and store.attrs["tokenizer"] == "toy"
    np.testing.assert_array_equal(store.unmasked_positions(), np.flatnonzero(mask.ravel()))
    blocks = list(store.iter_batches(3))
    assert [b[0] for b in blocks] == [0, 3, 6]
    np.testing.assert_array_equal(np.concatenate([b[1] for b in blocks]), tokens)


def test_activations_round_trip_in_chunks(tmp_path):
    rng = np.random.default_rng(1)
    parts = [rng.standard_normal((n, 6)).astype(np.float32) for n in (5, 0, 11, 3)]
    with stores.ActsWriter(tmp_path / "a.zarr", 6, attrs={"hook": "blocks.0.hook_resid_post"}, chunk_rows=4) as writer:
        for part in parts:
            writer.append(part)
    store = stores.open_acts(tmp_path / "a.zarr")
    assert (store.n_tokens, store.d_model) == (19, 6)
    chunks = list(store.iter_chunks(rows=4))
    assert all(len(c) <= 4 for c in chunks)
    np.testing.assert_array_equal(np.concatenate(chunks), np.concatenate(parts))
    assert store.attrs["hook"] == "blocks.0.hook_resid_post"


@pytest.mark.parametrize("value_dtype", ["float32", "float16"])
def test_codes_round_trip_sparse_and_dense_blocks(tmp_path, value_dtype):
    dense = sp.random(300, 40, density=0.05, random_state=2, format="csr", dtype=np.float32)
    with stores.CodesWriter(tmp_path / "c.zarr", 40, {"sae": "x"}, value_dtype, chunk_rows=64, chunk_nnz=50) as writer:
        writer.append(dense[:100])
        writer.append(dense[100:180].toarray())  # dense blocks are stored sparse too
        writer.append(dense[180:])
    store = stores.open_codes(tmp_path / "c.zarr")
    assert store.shape == (300, 40) and store.nnz == dense.nnz
    assert store.density == pytest.approx(dense.nnz / (300 * 40))
    expected = dense.toarray().astype(value_dtype).astype(np.float32)
    np.testing.assert_array_equal(store.to_csr().toarray(), expected)
    np.testing.assert_array_equal(sp.vstack(list(store.iter_chunks(rows=37))).toarray(), expected)
    np.testing.assert_array_equal(store.read_rows(150, 151).toarray(), expected[150:151])
    assert store.group["indptr"].dtype == np.int64 and store.group["indices"].dtype == np.int32


def test_failed_write_leaves_nothing(tmp_path):
    target = tmp_path / "c.zarr"
    with pytest.raises(RuntimeError):
        with stores.CodesWriter(target, 4) as writer:
            writer.append(np.eye(4))
            raise RuntimeError("simulated crash")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_killed_writer_leaves_no_complete_looking_store(tmp_path, killed_codes_writer):
    """A process killed mid-write leaves only a .tmp- path, which readers and inspect call incomplete."""
    target = tmp_path / "codes.zarr"
    killed_codes_writer(target)
    assert not target.exists()
    leftovers = list(tmp_path.iterdir())
    assert len(leftovers) == 1 and ".tmp-" in leftovers[0].name
    assert zarr.open_group(str(leftovers[0]), mode="r").attrs["complete"] is False
    with pytest.raises(stores.IncompleteStoreError):
        stores.open_store(leftovers[0])


def test_readers_refuse_foreign_and_wrong_kind(tmp_path):
    zarr.open_group(str(tmp_path / "foreign.zarr"), mode="w").create_array("x", shape=(2,), dtype="f4")
    with pytest.raises(stores.StoreKindError, match="not a featsim store"):
        stores.open_codes(tmp_path / "foreign.zarr")
    stores.write_tokens(tmp_path / "t.zarr", np.zeros((1, 2), np.int32), np.ones((1, 2), bool))
    with pytest.raises(stores.StoreKindError, match="tokens store, expected a codes store"):
        stores.open_codes(tmp_path / "t.zarr")
    with pytest.raises(FileNotFoundError):
        stores.open_codes(tmp_path / "missing.zarr")


def test_provenance_and_atomic_files(tmp_path):
    import pandas as pd

    assert config_hash({"a": 1, "b": [1, 2]}) == config_hash({"b": [1, 2], "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})
    record = make_provenance({"k": 1}, model="A", seed=3)
    assert {"featsim_version", "config_hash", "created", "model", "seed"} <= set(record)
    write_parquet(tmp_path / "x.parquet", pd.DataFrame({"a": [1, 2]}), record)
    assert read_parquet_provenance(tmp_path / "x.parquet")["model"] == "A"
    with pytest.raises(ValueError):
        with atomic_path(tmp_path / "y.json") as tmp:
            tmp.write_text("{}")
            raise ValueError("boom")
    assert not (tmp_path / "y.json").exists()
