"""The offline rehearsal of the real route (tests/rehearsal/): the whole workflow with HF_HUB_OFFLINE=1 on a
stand-in hub in a temporary HF_HOME, through every real loader (transformer-lens by official name from the
HF cache, sparsify hub layout, sae-lens registry releases with a pre-6.0 cfg.json and a Gemma Scope
params.npz, a parquet dataset revision read by datasets), checked against plain transformers/numpy oracles."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from featsim.errors import ConfigError
from rehearsal.build import CONTEXT_LENGTH, build_rehearsal, rehearsal_env

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.rehearsal]


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    root = tmp_path_factory.mktemp("rehearsal")
    started = time.perf_counter()
    built = build_rehearsal(root)
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(root), "--cores", "2",
               "--configfile", str(root / "config.yaml")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=1500,
                            env={**os.environ, **rehearsal_env(root)})
    assert result.returncode == 0, result.stderr[-5000:]
    print(f"rehearsal: built and ran in {time.perf_counter() - started:.0f} s")
    return root, built, root / "results" / "rehearsal"


def _read_sae(root: Path, kind: str) -> dict[str, np.ndarray]:
    """The stand-in SAE's weights as written (sae-lens shapes), and whether it subtracts b_dec first."""
    from safetensors.numpy import load_file

    if kind == "sparsify":
        raw = load_file(str(root / "src" / "sparsify" / "layers.1" / "sae.safetensors"))
        return {"W_enc": raw["encoder.weight"].T, "b_enc": raw["encoder.bias"], "W_dec": raw["W_dec"],
                "b_dec": raw["b_dec"], "b_dec_in": True}
    if kind == "jb":
        (path,) = (root / "src" / "jb").glob("*/sae_weights.safetensors")
        return {**load_file(str(path)), "b_dec_in": True}
    (path,) = (root / "src" / "scope").rglob("params.npz")
    with np.load(path) as params:
        return {**dict(params), "b_dec_in": False}


def _fvu_numpy(rows: np.ndarray, sae: dict) -> float:
    x = rows.astype(np.float64)
    pre = (x - sae["b_dec"] if sae["b_dec_in"] else x) @ sae["W_enc"] + sae["b_enc"]
    error = x - (np.maximum(pre, 0.0) @ sae["W_dec"] + sae["b_dec"])
    return float((error ** 2).sum() / ((x - x.mean(0)) ** 2).sum())


@pytest.mark.parametrize("model, layer, kind, architecture, ids", [
    ("pythia14m", 1, "sparsify", "topk", {"repo": "rehearsal/sae-pythia-14m", "hookpoint": "layers.1"}),
    ("pythia31m_jb", 1, "jb", "standard", {"release": "rehearsal-31m-res-jb", "id": "blocks.1.hook_resid_post"}),
    ("pythia31m_scope", 2, "scope", "jumprelu", {"release": "rehearsal-scope-31m-res",
                                                 "id": "layer_2/width_16k/canonical"}),
])
def test_each_sae_format_reads_its_hook_and_reconstructs_it(rehearsal, model, layer, kind, architecture, ids):
    from featsim.stores import open_acts

    root, built, results = rehearsal
    meta = json.loads((results / "saes" / model / f"L{layer}" / "meta.json").read_text())
    assert (meta["hook"], meta["sae_hook"]) == (f"blocks.{layer}.hook_resid_post",) * 2
    assert meta["architecture"] == architecture and {k: meta[k] for k in ids} == ids
    owner = "pythia14m" if model == "pythia14m" else "pythia31m_jb"  # the scope entry shares the jb LM's pass
    rows = np.concatenate(list(open_acts(results / "acts" / owner / f"L{layer}.zarr").iter_chunks(4096)))
    assert meta["quality"]["fvu"] == pytest.approx(_fvu_numpy(rows, _read_sae(root, kind)), rel=1e-3)
    assert meta["quality"]["fvu"] < meta["max_fvu"] == 0.15


def test_hub_named_lm_activations_equal_plain_transformers(rehearsal):
    """The TL model loaded by its official name from the HF cache computes what transformers computes."""
    import torch
    from transformers import AutoModelForCausalLM

    from featsim.stores import open_acts, open_tokens

    root, built, results = rehearsal
    tokens = open_tokens(results / "tokens.zarr")
    token_rows, mask = tokens.tokens[:8], tokens.mask[:8]
    model = AutoModelForCausalLM.from_pretrained(str(root / "src" / "EleutherAI" / "pythia-14m")).eval()
    with torch.no_grad():
        hidden = model(torch.as_tensor(token_rows, dtype=torch.long), output_hidden_states=True).hidden_states
    expected = hidden[2].numpy()[mask]  # block 1's output
    stored = next(open_acts(results / "acts" / "pythia14m" / "L1.zarr").iter_chunks(len(expected)))
    np.testing.assert_allclose(stored[: len(expected)], expected, rtol=1e-4, atol=1e-4)


def test_corpus_comes_from_the_parquet_revision_in_stream_order(rehearsal):
    from transformers import AutoTokenizer

    from featsim.stores import open_tokens

    root, built, results = rehearsal
    tokens = open_tokens(results / "tokens.zarr")
    assert tokens.attrs["tokenizer"] == "EleutherAI/pythia-14m" and tokens.attrs["prepend_bos"] is False
    shards = sorted((root / "src" / "dataset" / "plain_text" / "partial-train").glob("*.parquet"))
    documents = pd.concat([pd.read_parquet(path) for path in shards])["text"].tolist()
    tokenizer = AutoTokenizer.from_pretrained(str(root / "src" / "EleutherAI" / "pythia-14m"))
    stream: list[int] = []
    for ids in tokenizer(documents[:60], add_special_tokens=False)["input_ids"]:
        stream += ([tokenizer.eos_token_id] if stream else []) + ids
    token_rows, mask = tokens.tokens[:], tokens.mask[:]
    n_rows = token_rows.shape[0]
    np.testing.assert_array_equal(token_rows, np.asarray(stream[: n_rows * CONTEXT_LENGTH]).reshape(n_rows, -1))
    assert not mask[token_rows == tokenizer.eos_token_id].any() and mask.sum() > 0.9 * mask.size


def test_scores_summaries_and_figures_are_written(rehearsal):
    root, built, results = rehearsal
    for comparison in ("main", "scope"):
        summary = pd.read_csv(results / "summary" / comparison / "one_to_one.csv")
        assert set(summary["metric"]) == {"svcca", "rsa", "cka"} and (summary["status"] == "scored").all()
        assert np.isfinite(summary["observed"]).all() and (summary["n_permutations"] == 100).all()
        assert ((summary["p_value"] > 0) & (summary["p_value"] <= 1)).all()
        assert (results / "summary" / comparison / "one_to_one.html").stat().st_size > 1000
    assert len(list((results / "figures").glob("comparisons_one_to_one_*.png"))) >= 3


def test_the_report_renders(rehearsal):
    root, built, results = rehearsal
    report = root / "report.html"
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(root), "--cores", "2",
               "--configfile", str(root / "config.yaml"), "--report", str(report)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env={**os.environ, **rehearsal_env(root)})
    assert result.returncode == 0, result.stderr[-3000:]
    assert report.stat().st_size > 100_000 and "comparisons_one_to_one" in report.read_text(errors="replace")


def test_the_fvu_gate_stops_an_sae_fed_the_wrong_hook(rehearsal, tmp_path):
    """The SAE of block 0, saved as that of block 1 (the study's off-by-one): FVU ~0.2 > max_fvu 0.15."""
    from featsim.targets.activations import make_codes

    root, built, results = rehearsal
    assert built["fvu"]["wrong-hook/layers.1 on block 1"] > 0.15 > built["fvu"]["sparsify/layers.1"]
    sae = {"source": "sparsify", "repo": str(root / "wrong-hook"), "hookpoint": "layers.{layer}", "max_fvu": 0.15}
    out = tmp_path / "out"
    with pytest.raises(ConfigError) as err:
        make_codes(results / "acts" / "pythia14m" / "L1.zarr", "pythia14m", 1, sae, "code", {}, root / "results" /
                   "rehearsal", out / "L1.zarr", out / "decoder.npy", out / "meta.json", device="cpu")
    assert err.value.key == "models.pythia14m.sae.max_fvu"
    assert not (out / "L1.zarr").exists() and not (out / "meta.json").exists()
