"""Fault injection: damaged, incomplete, orphaned and non-finite stores are detected by the readers jobs use
(open_codes / the correlate stage, open_acts, open_tokens, open_correlation) and by `featsim verify`,
each with a message naming the store, the fault and the command that rebuilds it.

Stores are built with featsim's own writers; faults are injected into the files on disk (oracle: the
file system), or written through plain zarr (valid checksums, broken invariants) to stand for a buggy
writer or a store of an older featsim.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import zarr

from featsim import stores
from featsim.cli import main
from featsim.correlation_result import open_correlation
from featsim.provenance import make_provenance
from featsim.stores import DamagedStoreError, IncompleteStoreError, NonFiniteDataError
from featsim.targets.correlate import correlate_code_stores

N_ROWS, WIDTH = 300, 40


def codes_matrix(seed: int = 0) -> sp.csr_matrix:
    return sp.random(N_ROWS, WIDTH, density=0.1, random_state=seed, format="csr", dtype=np.float32)


def write_small_codes(path: Path, seed: int = 0) -> sp.csr_matrix:
    """A codes store of several chunks per array (64 rows, 200 entries per chunk)."""
    matrix = codes_matrix(seed)
    with stores.CodesWriter(path, WIDTH, make_provenance({}, model="A", layer=1, hook="blocks.1.hook_resid_post"),
                            chunk_rows=64, chunk_nnz=200) as writer:
        writer.append(matrix)
    return matrix


def chunk_file(store: Path, array: str, index: int = 1) -> Path:
    path = store / array / "c" / str(index)
    assert path.is_file(), f"expected chunk file {path}"
    return path


def assert_names_store_and_fix(message: str, store: Path, fault: str) -> None:
    assert str(store) in message and fault in message
    assert f"snakemake -f {store}" in message and "rerun-incomplete" not in message


@pytest.fixture
def pair_of_stores(tmp_path):
    write_small_codes(tmp_path / "a.zarr", seed=0)
    write_small_codes(tmp_path / "b.zarr", seed=1)
    return tmp_path / "a.zarr", tmp_path / "b.zarr"


def correlate(a: Path, b: Path, out: Path):
    """The correlate stage on two code stores (what the `correlate` rule runs)."""
    return correlate_code_stores(a, b, out, {"min_active": 1, "top_k": 2, "device": "cpu"})


def verify(capsys, *paths, clean: bool = False) -> tuple[int, str]:
    status = main(["verify", *(["--clean-orphans"] if clean else []), *map(str, paths)])
    return status, capsys.readouterr().out


def test_intact_stores_pass_reader_and_verify(pair_of_stores, tmp_path, capsys):
    a, b = pair_of_stores
    correlate(a, b, tmp_path / "corr.zarr")
    assert open_correlation(tmp_path / "corr.zarr").n_tokens == N_ROWS
    status, out = verify(capsys, tmp_path)
    assert status == 0 and out.count("OK ") == 3 and "3 ok" in out


def test_every_chunk_is_written_even_all_zero_ones(tmp_path):
    """An all-zero chunk must exist on disk, or a deleted chunk could not be told from one (zarr reads fill)."""
    matrix = codes_matrix().tolil()
    matrix[:70] = 0  # the first indptr chunk (rows 0..63) is all zeros
    with stores.CodesWriter(tmp_path / "c.zarr", WIDTH, chunk_rows=64, chunk_nnz=200) as writer:
        writer.append(matrix.tocsr())
    with stores.ActsWriter(tmp_path / "a.zarr", 3, chunk_rows=4) as writer:
        writer.append(np.zeros((10, 3)))
    assert sorted(os.listdir(tmp_path / "c.zarr" / "indptr" / "c")) == [str(i) for i in range(5)]
    assert sorted(os.listdir(tmp_path / "a.zarr" / "acts" / "c")) == ["0", "1", "2"]
    np.testing.assert_array_equal(stores.open_codes(tmp_path / "c.zarr").to_csr().toarray(), matrix.toarray())


@pytest.mark.parametrize("array", ["values", "indices", "indptr"])
def test_deleted_chunk_stops_the_correlation(pair_of_stores, tmp_path, capsys, array):
    a, b = pair_of_stores
    chunk_file(a, array, 0).unlink()
    with pytest.raises(DamagedStoreError) as err:
        correlate(a, b, tmp_path / "corr.zarr")
    assert_names_store_and_fix(str(err.value), a, f"array '{array}' lacks 1 of")
    assert not (tmp_path / "corr.zarr").exists()
    status, out = verify(capsys, tmp_path)
    assert status == 1 and f"DAMAGED      {a}" in out and f"OK           {b}" in out


@pytest.mark.parametrize("keep", [0.0, 0.5, 0.99])
def test_truncated_chunk_is_named(pair_of_stores, tmp_path, capsys, keep):
    a, b = pair_of_stores
    chunk = chunk_file(a, "values", 2)
    chunk.write_bytes(chunk.read_bytes()[: int(chunk.stat().st_size * keep)])
    with pytest.raises(DamagedStoreError) as err:
        correlate(a, b, tmp_path / "corr.zarr")
    assert_names_store_and_fix(str(err.value), a, "a chunk of array 'values' cannot be read or decoded")
    status, out = verify(capsys, a)
    assert status == 1 and "DAMAGED" in out


@pytest.mark.parametrize("where", [0.0, 0.3, 0.6, 0.99])
def test_flipped_bit_in_a_compressed_chunk_is_caught_by_its_checksum(pair_of_stores, tmp_path, where):
    a, b = pair_of_stores
    chunk = chunk_file(a, "values", 1)
    raw = bytearray(chunk.read_bytes())
    raw[int(where * (len(raw) - 1))] ^= 0x10
    chunk.write_bytes(bytes(raw))
    with pytest.raises(DamagedStoreError) as err:
        correlate(a, b, tmp_path / "corr.zarr")
    assert_names_store_and_fix(str(err.value), a, "array 'values' cannot be read or decoded")


def rewrite_array(store: Path, name: str, edit) -> None:
    """Change an array's content through zarr (valid checksums: a writer bug, not disk damage)."""
    array = zarr.open_array(str(store / name), mode="r+")
    array[:] = edit(array[:])


@pytest.mark.parametrize("fault, edit, name", [
    ("indptr is not non-decreasing", lambda p: np.where(np.arange(p.size) == 100, p[99] - 1, p), "indptr"),
    ("indptr runs from 0 to", lambda p: np.where(np.arange(p.size) == p.size - 1, p[-1] - 3, p), "indptr"),
    ("latent ids outside [0, d_sae=40)", lambda i: np.where(np.arange(i.size) == 7, 40, i), "indices"),
    ("non-finite SAE codes", lambda v: np.where(np.arange(v.size) == 5, np.nan, v), "values"),
])
def test_broken_csr_invariants_are_detected(pair_of_stores, tmp_path, fault, edit, name):
    a, b = pair_of_stores
    rewrite_array(a, name, edit)
    with pytest.raises(DamagedStoreError) as err:
        correlate(a, b, tmp_path / "corr.zarr")
    assert_names_store_and_fix(str(err.value), a, fault)


@pytest.mark.filterwarnings("ignore:Object at values is not recognized")  # zarr, on the damaged store
def test_deleted_metadata_is_detected(pair_of_stores, tmp_path, capsys):
    a, b = pair_of_stores
    (a / "values" / "zarr.json").unlink()
    with pytest.raises(DamagedStoreError) as err:
        correlate(a, b, tmp_path / "corr.zarr")
    assert_names_store_and_fix(str(err.value), a, "array 'values' is missing")
    (b / "zarr.json").unlink()
    with pytest.raises(stores.StoreKindError, match=f"snakemake -f {b}"):
        stores.open_codes(b)
    status, out = verify(capsys, tmp_path)
    assert status == 1 and out.count("DAMAGED") == 2


def test_shapes_and_dtypes_must_match_the_attrs(pair_of_stores, tmp_path):
    a, _ = pair_of_stores
    zarr.open_group(str(a), mode="r+").attrs["nnz"] = 17
    with pytest.raises(DamagedStoreError) as err:
        stores.open_codes(a)
    assert_names_store_and_fix(str(err.value), a, "array 'indices' is int32 (")


def test_damaged_activation_tokens_and_correlation_stores(tmp_path, capsys):
    with stores.ActsWriter(tmp_path / "acts.zarr", 4, chunk_rows=8) as writer:
        writer.append(np.ones((20, 4)))
    stores.write_tokens(tmp_path / "tokens.zarr", np.ones((6, 5), np.int32), np.ones((6, 5), bool))
    write_small_codes(tmp_path / "a.zarr")
    correlate(tmp_path / "a.zarr", tmp_path / "a.zarr", tmp_path / "corr.zarr")
    (tmp_path / "acts.zarr" / "acts" / "c" / "1" / "0").unlink()
    (tmp_path / "tokens.zarr" / "mask" / "c" / "0" / "0").unlink()
    corr_chunk = tmp_path / "corr.zarr" / "mean_a" / "c" / "0"
    raw = bytearray(corr_chunk.read_bytes())
    raw[len(raw) // 2] ^= 1
    corr_chunk.write_bytes(bytes(raw))
    for opener, path, fault in ((stores.open_acts, "acts.zarr", "array 'acts' lacks 1 of its 3 chunks"),
                                (stores.open_tokens, "tokens.zarr", "array 'mask' lacks 1 of"),
                                (open_correlation, "corr.zarr", "a chunk of array 'mean_a' cannot be read")):
        with pytest.raises(DamagedStoreError) as err:
            opener(tmp_path / path)
        assert_names_store_and_fix(str(err.value), tmp_path / path, fault)
    status, out = verify(capsys, tmp_path)
    assert status == 1 and out.count("DAMAGED") == 3 and f"OK           {tmp_path / 'a.zarr'}" in out


def test_nan_activations_stop_the_writer_and_leave_nothing(tmp_path):
    attrs = {"model": "A", "layer": 1, "hook": "blocks.1.hook_resid_post", "lm_dtype": "float16"}
    block = np.ones((10, 4), np.float32)
    block[3, 2] = np.nan
    with pytest.raises(NonFiniteDataError) as err:
        with stores.ActsWriter(tmp_path / "acts.zarr", 4, attrs=attrs) as writer:
            writer.append(np.ones((16, 4)))
            writer.append(block)
    message = str(err.value)
    for part in ("1 non-finite activations (1 NaN, 0 inf) in rows 16..25", "model A", "layer 1",
                 "hook blocks.1.hook_resid_post", "LM dtype float16", "half precision"):
        assert part in message
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(NonFiniteDataError, match="1 non-finite activations \\(0 NaN, 1 inf\\)"):
        with stores.ActsWriter(tmp_path / "half.zarr", 2, dtype="float16") as writer:
            writer.append(np.array([[1.0, 7e4]]))  # float16 overflows above 65504
    assert list(tmp_path.iterdir()) == []


def test_non_finite_data_already_stored_is_refused_by_readers(tmp_path):
    """NaN written by an older featsim (no finiteness check) is refused when read, naming the cause."""
    with stores.ActsWriter(tmp_path / "acts.zarr", 3, attrs={"model": "A", "lm_dtype": "bfloat16"}) as writer:
        writer.append(np.ones((5, 3)))
    rewrite_array(tmp_path / "acts.zarr", "acts", lambda x: np.where(x > 0, np.inf, x))
    with pytest.raises(DamagedStoreError) as err:
        list(stores.open_acts(tmp_path / "acts.zarr").iter_chunks())
    assert_names_store_and_fix(str(err.value), tmp_path / "acts.zarr", "15 non-finite activations (0 NaN, 15 inf)")
    assert "LM dtype bfloat16" in str(err.value) and "half precision" in str(err.value)


def test_killed_writer_leaves_an_orphan_that_verify_reports_and_cleans(tmp_path, capsys, killed_codes_writer):
    target = tmp_path / "codes.zarr"

    def while_writing(pid):  # the writer still runs: in progress, not an orphan
        status, out = verify(capsys, tmp_path)
        assert status == 0 and f"IN-PROGRESS  {tmp_path / f'codes.zarr.tmp-{pid}'}" in out

    pid = killed_codes_writer(target, while_writing)
    temp = tmp_path / f"codes.zarr.tmp-{pid}"
    assert not target.exists() and temp.is_dir()
    with pytest.raises(IncompleteStoreError) as err:
        stores.open_codes(temp)
    assert f"snakemake -f {target}" in str(err.value) and "rerun-incomplete" not in str(err.value)
    assert main(["inspect", str(temp)]) == 1
    capsys.readouterr()
    status, out = verify(capsys, tmp_path)
    assert status == 1 and f"ORPHAN       {temp}" in out and "--clean-orphans" in out and temp.exists()
    status, out = verify(capsys, tmp_path, clean=True)
    assert status == 0 and f"REMOVED      {temp}" in out and not temp.exists()


def test_a_new_writer_removes_orphans_of_its_target_only(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    orphan = tmp_path / f"c.zarr.tmp-{dead_pid}"
    other_target = tmp_path / f"c.zarr.x.tmp-{dead_pid}"
    live = tmp_path / f"c.zarr.tmp-{os.getppid()}"  # a running process (pytest's parent)
    for path in (orphan, other_target, live):
        path.mkdir()
    write_small_codes(tmp_path / "c.zarr")
    assert not orphan.exists() and other_target.exists() and live.exists()


def test_orphaned_temp_files_are_reported_too(tmp_path, capsys):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    orphan = tmp_path / "scores" / f"A1_B1.json.tmp-{int(dead.stdout)}"
    orphan.parent.mkdir()
    orphan.write_text("{")
    status, out = verify(capsys, tmp_path)
    assert status == 1 and f"ORPHAN       {orphan}" in out
    assert verify(capsys, tmp_path, clean=True)[0] == 0 and not orphan.exists()


def write_old_format_codes(path: Path, matrix: sp.csr_matrix) -> None:
    """A codes store as featsim wrote them before store_format 2: default codecs, no checksum, no format attr."""
    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    group.create_array("indptr", data=matrix.indptr.astype(np.int64), chunks=(65,))
    group.create_array("indices", data=matrix.indices.astype(np.int32), chunks=(200,))
    group.create_array("values", data=matrix.data.astype(np.float32), chunks=(200,))
    group.attrs.update({"kind": "codes", "n_tokens": matrix.shape[0], "d_sae": matrix.shape[1], "nnz": matrix.nnz,
                        "value_dtype": "float32", "complete": True})


def test_stores_of_an_older_featsim_still_open_with_a_warning(tmp_path, capsys, caplog):
    matrix = codes_matrix()
    write_old_format_codes(tmp_path / "old.zarr", matrix)
    with caplog.at_level("WARNING"):
        codes = stores.open_codes(tmp_path / "old.zarr")
    assert "older featsim" in caplog.text and f"snakemake -f {tmp_path / 'old.zarr'}" in caplog.text
    np.testing.assert_array_equal(codes.to_csr().toarray(), matrix.toarray())
    status, out = verify(capsys, tmp_path / "old.zarr")
    assert status == 0 and "OLD-FORMAT" in out and "no chunk checksums" in out
    rewrite_array(tmp_path / "old.zarr", "indptr", lambda p: np.where(np.arange(p.size) == 10, 0, p))
    with pytest.raises(DamagedStoreError, match="indptr is not non-decreasing"):
        codes.to_csr()


def test_inspect_reports_damage_and_no_snakemake_timestamp_warning(pair_of_stores, capsys):
    a, b = pair_of_stores
    (b / ".snakemake_timestamp").touch()  # Snakemake drops this into directory outputs
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert main(["inspect", str(b)]) == 0
    chunk_file(a, "values", 0).unlink()
    assert main(["inspect", str(a)]) == 1
    assert "DAMAGED" in capsys.readouterr().out
    with stores.ActsWriter(a.parent / "acts.zarr", 3) as writer:
        writer.append(np.ones((4, 3)))
    first = a.parent / "acts.zarr" / "acts" / "c" / "0" / "0"
    first.write_bytes(first.read_bytes()[:-1] + bytes([first.read_bytes()[-1] ^ 1]))
    assert main(["inspect", str(a.parent / "acts.zarr")]) == 1
    out = capsys.readouterr().out
    assert "DAMAGED" in out and "checksum do not match" in out and "snakemake -f" in out


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    """A tiny Pythia-architecture checkpoint, a tokens store of its tokenizer, an exact SAE at layer 1 and
    one with a NaN encoder bias."""
    from test_loaders import D_MODEL, build_neox_checkpoint, identity_topk_sae, save_sae
    from transformers import AutoTokenizer

    from featsim.tokens import vocab_hash

    root = tmp_path_factory.mktemp("lm")
    checkpoint = build_neox_checkpoint(root / "tiny-pythia")
    tok = AutoTokenizer.from_pretrained(str(checkpoint))
    tokens = np.random.default_rng(0).integers(2, len(tok), size=(4, 8)).astype(np.int32)
    stores.write_tokens(root / "tokens.zarr", tokens, np.ones(tokens.shape, bool),
                        {"tokenizer": str(checkpoint), "vocab_hash": vocab_hash(tok)})
    sae = identity_topk_sae(D_MODEL, "blocks.1.hook_resid_post")
    save_sae(sae, root / "good" / "L1")
    with torch.no_grad():
        sae.b_enc[3] = float("nan")
    save_sae(sae, root / "nan" / "L1")
    return root, checkpoint


def run_activations(tiny_lm, out: Path) -> Path:
    from featsim.targets.activations import make_activations

    root, checkpoint = tiny_lm
    sae = {"source": "local", "path": str(root / "good" / "L{layer}")}
    make_activations(root / "tokens.zarr", {1: out}, "A", "A", {"source": "local", "path": str(checkpoint)},
                     {"A": {"sae": sae, "layers": [1]}}, {}, root, device="cpu", batch_size=2)
    return out


def test_non_finite_activations_stop_the_activations_job(tiny_lm, tmp_path, monkeypatch):
    import featsim.lm

    real_capture = featsim.lm.capture_hooks

    def overflowing(*args, **kwargs):  # what a float16 overflow in the LM looks like
        captured = real_capture(*args, **kwargs)
        for rows in captured.values():
            rows[1, 2] = float("inf")
        return captured

    monkeypatch.setattr(featsim.lm, "capture_hooks", overflowing)
    with pytest.raises(NonFiniteDataError) as err:
        run_activations(tiny_lm, tmp_path / "acts" / "L1.zarr")
    for part in ("1 non-finite activations (0 NaN, 1 inf) in rows 0..15", "model A", "layer 1",
                 "hook blocks.1.hook_resid_post", "LM dtype float32", "half precision"):
        assert part in str(err.value)
    assert list((tmp_path / "acts").iterdir()) == []


def test_nan_codes_stop_the_codes_job_in_legacy_mode(tiny_lm, tmp_path):
    """With a legacy switch on the FVU gate only warns; non-finite codes still stop the job, writing nothing."""
    from featsim.targets.activations import make_codes

    root, _ = tiny_lm
    acts = run_activations(tiny_lm, tmp_path / "acts" / "L1.zarr")
    outputs = {"out_codes": tmp_path / "codes" / "L1.zarr", "out_decoder": tmp_path / "codes" / "L1.npy",
               "out_meta": tmp_path / "codes" / "L1.json"}
    with pytest.raises(NonFiniteDataError) as err:
        make_codes(acts, "A", 1, {"source": "local", "path": str(root / "nan" / "L{layer}")}, "code",
                   {"keep_special_tokens": True}, root, device="cpu", **outputs)
    assert "non-finite SAE codes" in str(err.value) and "model A, layer 1" in str(err.value)
    assert "LM dtype float32" in str(err.value)
    assert list((tmp_path / "codes").iterdir()) == []
