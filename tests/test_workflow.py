"""Workflow-level tests: every config plans offline, a bad config stops before any job, and the reduced
toy experiment runs end to end with checks on content, partial rebuilds and the report."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
E2E_CONFIG = REPO / "tests" / "e2e" / "config.yaml"
EXPERIMENT_CONFIGS = sorted(p.name for p in (REPO / "configs").glob("*.yaml"))


def snakemake(workdir: Path, *args: str, timeout: int = 1500) -> subprocess.CompletedProcess:
    """Run the repository's workflow with `workdir` as its working directory."""
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir),
               "--cores", "2", *args]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)


def rules_run(result: subprocess.CompletedProcess) -> set[str]:
    """Names of the rules whose jobs a (dry) run executed or planned."""
    return set(re.findall(r"^(?:local)?rule (\w+):", result.stdout + result.stderr, flags=re.MULTILINE))


@pytest.mark.parametrize("configfile", [None, *EXPERIMENT_CONFIGS])
def test_configs_plan_offline(tmp_path, configfile):
    args = ["-n"] + (["--configfile", str(REPO / "configs" / configfile)] if configfile else [])
    result = snakemake(tmp_path, *args, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    planned = rules_run(result)
    assert {"tokens", "codes", "correlate", "pair", "score", "summary", "all"} <= planned
    if configfile is None:
        assert {"toy_corpus", "toy_lm", "toy_sae", "semantic_main", "concept_members"} <= planned
    else:  # an experiment file is the whole config: nothing of the toy default is merged in
        assert not {"toy_corpus", "toy_lm", "toy_sae"} & planned


def test_misspelt_key_stops_before_any_job(tmp_path):
    config = yaml.safe_load(E2E_CONFIG.read_text())
    config["pairings"]["mutual"]["min_cor"] = config["pairings"]["mutual"].pop("min_corr")
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(config))
    result = snakemake(tmp_path, "--configfile", str(tmp_path / "bad.yaml"), timeout=300)
    assert result.returncode != 0
    assert "pairings.mutual.min_cor" in result.stderr and "Did you mean 'min_corr'" in result.stderr
    assert not (tmp_path / "results").exists()


@pytest.fixture(scope="module")
def e2e(tmp_path_factory):
    """The reduced toy experiment, run once for all end-to-end checks."""
    workdir = tmp_path_factory.mktemp("e2e")
    shutil.copytree(REPO / "configs" / "concepts" / "toy", workdir / "concepts")
    config = yaml.safe_load(E2E_CONFIG.read_text())
    config["null"] = config.pop(None)  # YAML reads the unquoted `null:` key as None
    config["semantic"]["concepts"] = [str(workdir / "concepts" / "animal.yaml"), str(workdir / "concepts" / "color.yaml")]
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    result = snakemake(workdir, "--configfile", str(workdir / "config.yaml"))
    assert result.returncode == 0, result.stderr[-5000:]
    return workdir, config


def _mtimes(root: Path) -> dict[str, float]:
    return {str(p.relative_to(root)): p.stat().st_mtime for p in root.rglob("*") if p.is_file()}


def _settled_mtimes(workdir: Path) -> dict[str, float]:
    """Bring the results up to date with config.yaml (whatever an earlier test left), then snapshot them."""
    result = snakemake(workdir, "--configfile", str(workdir / "config.yaml"))
    assert result.returncode == 0, result.stderr[-3000:]
    return _mtimes(workdir / "results" / "e2e")


def test_e2e_scores_are_valid_and_main_beats_its_null(e2e):
    workdir, config = e2e
    results = workdir / "results" / "e2e"
    m = config["null"]["permutations"]
    for comparison in config["comparisons"]:
        for pairing in config["pairings"]:
            table = pd.read_csv(results / "summary" / comparison / f"{pairing}.csv", comment="#")
            scored = table[table["status"] == "scored"]
            assert len(scored) > 0
            assert (scored["p_value"] >= 1 / (m + 1) - 1e-12).all()
            assert (scored["p_holm"] >= scored["p_value"] - 1e-12).all()
            assert scored["n_permutations"].eq(m).all()
    main = pd.read_csv(results / "summary" / "main" / "one_to_one.csv", comment="#")
    assert (main.loc[main["status"] == "scored", "p_holm"] < 0.01).any()


def test_e2e_stores_and_scores_carry_provenance(e2e):
    from featsim.stores import open_codes, open_tokens

    workdir, _ = e2e
    results = workdir / "results" / "e2e"
    tokens = open_tokens(results / "tokens.zarr")
    codes = open_codes(results / "codes" / "A" / "L1.zarr")
    assert codes.n_tokens == tokens.n_unmasked  # padding/BOS/EOS rows are not data
    assert codes.attrs["hook"] == "blocks.1.hook_resid_post" and codes.attrs["fvu"] < 0.3
    assert {"featsim_version", "config_hash"} <= set(codes.attrs)
    score = json.loads((results / "scores" / "main" / "one_to_one" / "svcca" / "A1_B1.json").read_text())
    assert score["provenance"]["config_hash"] and score["p_value"] >= 1 / (score["n_permutations"] + 1)
    null = np.load(results / "scores" / "main" / "one_to_one" / "svcca" / "A1_B1.null.npy")
    assert len(null) == score["n_permutations"]


def test_e2e_labels_and_correlations_read_disjoint_sequences(e2e):
    from featsim.provenance import read_parquet_provenance
    from featsim.split import heldout_sequences
    from featsim.stores import open_store, open_tokens

    workdir, config = e2e
    results = workdir / "results" / "e2e"
    tokens = open_tokens(results / "tokens.zarr")
    labels = pd.read_parquet(results / "labels" / "A" / "L1.parquet")
    split = read_parquet_provenance(results / "labels" / "A" / "L1.parquet")["split"]
    corr = open_store(results / "corr" / "main" / "A1_B1.zarr", kind="correlation").attrs
    fraction = config["data"].get("heldout_fraction", 0.2)
    assert split["heldout_fraction"] == fraction > 0
    assert split["n_label_rows"] + corr["n_tokens"] == tokens.n_unmasked
    assert corr["split"]["n_pair_rows"] == corr["n_tokens"]
    heldout = heldout_sequences(tokens.n_sequences, fraction, config["data"].get("seed", 0))
    positions = np.concatenate([np.asarray(p, dtype=np.int64) for p in labels["top_positions"]])
    assert heldout[positions // tokens.context_length].all()


def test_e2e_report_renders(e2e):
    workdir, config = e2e
    report = workdir / "report.html"
    result = snakemake(workdir, "--configfile", str(workdir / "config.yaml"), "--report", str(report), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert report.stat().st_size > 100_000
    assert "comparisons_one_to_one" in report.read_text(errors="replace")


def test_e2e_editing_a_junk_list_rebuilds_only_that_variant(e2e):
    workdir, config = e2e
    results = workdir / "results" / "e2e"
    before = _settled_mtimes(workdir)
    edited = yaml.safe_load((workdir / "config.yaml").read_text())
    edited["pairings"]["mutual"]["junk_tokens"] = [".", ",", "the"]
    (workdir / "config.yaml").write_text(yaml.safe_dump(edited))
    result = snakemake(workdir, "--configfile", str(workdir / "config.yaml"))
    assert result.returncode == 0, result.stderr[-3000:]
    ran = rules_run(result)
    assert "pair" in ran and "score" in ran
    assert not ran & {"toy_corpus", "toy_lm", "toy_sae", "tokens", "codes", "labels", "correlate",
                      "concept_members", "concept_pairs", "semantic_score"}
    after = _mtimes(results)
    changed = {path for path, mtime in after.items() if before.get(path) != mtime}
    assert any(path.startswith("pairs/main/mutual/") for path in changed)
    assert not any(path.startswith(("pairs/main/one_to_one/", "scores/main/one_to_one/", "codes/", "corr/"))
                   for path in changed)


def test_e2e_changing_the_heldout_split_replans_labels_and_correlations_only(e2e):
    workdir, _ = e2e
    _settled_mtimes(workdir)
    edited = yaml.safe_load((workdir / "config.yaml").read_text())
    edited["data"]["heldout_fraction"] = 0.3
    (workdir / "split.yaml").write_text(yaml.safe_dump(edited))
    result = snakemake(workdir, "--configfile", str(workdir / "split.yaml"), "-n", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    planned = rules_run(result)
    assert {"labels", "correlate", "pair", "score", "concept_members"} <= planned
    assert not planned & {"toy_corpus", "toy_lm", "toy_sae", "tokens", "codes"}
    assert not any(rule.startswith("activations_") for rule in planned)


def test_e2e_editing_a_concept_file_rebuilds_only_that_concept(e2e):
    workdir, config = e2e
    results = workdir / "results" / "e2e"
    before = _settled_mtimes(workdir)
    color = workdir / "concepts" / "color.yaml"
    concept = yaml.safe_load(color.read_text())
    concept["description"] = concept.get("description", "") + " (edited)"
    color.write_text(yaml.safe_dump(concept))
    result = snakemake(workdir, "--configfile", str(workdir / "config.yaml"))
    assert result.returncode == 0, result.stderr[-3000:]
    changed = {path for path, mtime in _mtimes(results).items() if before.get(path) != mtime}
    assert any("/color/" in path or path.endswith("/color.parquet") for path in changed)
    assert not any("/animal/" in path or path.endswith("/animal.parquet") for path in changed)
    assert not any(path.startswith(("codes/", "corr/", "pairs/", "scores/")) for path in changed)
