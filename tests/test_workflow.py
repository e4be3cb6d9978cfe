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

from featsim import layout

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
    """Names of the rules whose jobs a (dry) run executed or planned; a per-model toy SAE rule
    (`toy_sae_<model>`) also counts as `toy_sae`."""
    names = set(re.findall(r"^(?:local)?rule (\w+):", result.stdout + result.stderr, flags=re.MULTILINE))
    return names | {"toy_sae" for name in names if name.startswith("toy_sae_")}


@pytest.mark.parametrize("configfile", [None, *EXPERIMENT_CONFIGS])
def test_configs_plan_offline(tmp_path, configfile):
    args = ["-n"] + (["--configfile", str(REPO / "configs" / configfile)] if configfile else [])
    result = snakemake(tmp_path, *args, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    planned = rules_run(result)
    assert {"tokens", "codes", "correlate", "pair", "score", "summary", "all"} <= planned
    if configfile is None:
        assert {"toy_corpus", "toy_lm", "toy_sae", "semantic_main", "concept_members", "concept_labels",
                "concept_evidence", "shared_concepts"} <= planned
    else:  # an experiment file is the whole config: nothing of the toy default is merged in
        config = yaml.safe_load((REPO / "configs" / configfile).read_text())
        toy = config["data"].get("source") == "toy"
        assert bool({"toy_corpus", "toy_lm", "toy_sae"} & planned) == toy
        if any(entry.get("align") for entry in config["comparisons"].values()):  # two tokenizers (issue 15)
            assert {"tokens_further", "alignment"} <= planned


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


def test_e2e_no_degenerate_cell_is_scored_and_every_cell_has_a_status(e2e):
    from featsim.null import NULL_TOLERANCE

    workdir, config = e2e
    summaries = sorted((workdir / "results" / "e2e" / "summary").glob("*/*.csv"))
    assert any(path.name.startswith("semantic_") for path in summaries)
    for path in summaries:
        table = pd.read_csv(path, keep_default_na=False, na_values=[""])
        if "metric" not in table:  # concept-evidence tables have their own columns
            continue
        assert set(table["status"]) <= {"scored", "not_scored", "underpowered"}
        tested = table[table["status"] != "not_scored"]
        assert (table.loc[table["status"] != "scored", "reason"].fillna("") != "").all()
        svcca = tested[tested["metric"].isin(["svcca", "svcca_legacy"])]
        assert (svcca["k_a"] + svcca["k_b"] < svcca["n_pairs"] - 1).all(), path
        assert (tested["p_min_adjusted"] >= tested["p_min"] - 1e-15).all()
        assert not tested.loc[tested["status"] == "underpowered", "significant"].any()
        assert (tested.loc[tested["status"] == "underpowered", "p_min_adjusted"] >= config.get("alpha", 0.05)).all()
        finite_z = tested[np.isfinite(tested["z"])]
        assert (finite_z["null_std"] > NULL_TOLERANCE["float64"]).all()


def test_e2e_stores_and_scores_carry_provenance(e2e):
    from featsim.stores import open_codes, open_tokens

    workdir, _ = e2e
    results = workdir / "results" / "e2e"
    tokens = open_tokens(results / "tokens.zarr")
    codes = open_codes(results / "codes" / "A" / "L1.zarr")
    assert codes.n_tokens == tokens.n_unmasked  # padding/BOS/EOS rows are not data
    assert codes.attrs["hook"] == "blocks.1.hook_resid_post" and codes.attrs["fvu"] < 0.3
    assert {"featsim_version", "config_hash"} <= set(codes.attrs)
    score = json.loads((results / "scores" / "main" / "one_to_one" / "cka" / "A1_B1.json").read_text())
    assert score["status"] == "scored"
    assert score["provenance"]["config_hash"] and score["p_value"] >= 1 / (score["n_permutations"] + 1)
    null = np.load(results / "scores" / "main" / "one_to_one" / "cka" / "A1_B1.null.npy")
    assert len(null) == score["n_permutations"]


def test_e2e_labels_and_correlations_read_disjoint_sequences(e2e):
    from featsim.parquet import read_parquet_provenance
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


def test_e2e_concept_evidence_tables(e2e):
    from featsim.concept_agreement import cell_agreement

    workdir, config = e2e
    results = workdir / "results" / "e2e"
    labels = pd.read_parquet(results / "concepts" / "labels" / "A" / "L1.parquet")
    assert {"latent", "concept", "status", "n_matches", "keywords", "keyword_counts"} <= set(labels.columns)
    assert len(labels) == 128 and (labels["status"] == "labelled").sum() == labels["concept"].notna().sum() > 0
    for pairing in config["pairings"]:
        agreement = pd.read_csv(results / "summary" / f"concept_agreement_{pairing}.csv")
        assert {"comparison", "layer_a", "layer_b", "n_labelled", "agreement", "null_mean", "null_std", "p", "p_holm",
                "p_bh", "recall", "concept"} <= set(agreement.columns)
        scored = agreement[agreement["status"] == "scored"]
        assert (scored["p"] >= 1 / 10001 - 1e-12).all() and (scored["p_holm"] >= scored["p"] - 1e-12).all()
        contrasts = pd.read_csv(results / "summary" / f"contrasts_{pairing}.csv")
        assert {"comparison", "contrast", "layer_a", "layer_b", "test", "statistic", "n", "p", "p_holm"} \
            <= set(contrasts.columns)
        # control has B layer 1 only: cells with layer_b 0 cannot be matched (different numbers of B layers)
        matched = contrasts[contrasts["status"] != "not_scored"]  # scored or underpowered: a p-value
        assert set(zip(matched["layer_a"], matched["layer_b"])) <= {(0, 1), (1, 1)}
        assert contrasts.loc[contrasts["layer_b"] == 0, "reason"].str.contains("layer_b 0").all()
        assert set(matched["test"]) == {"mcnemar", "did_best_corr"}
    shared = pd.read_csv(results / "summary" / "shared_concepts.csv")
    assert {"concept agreement", "mcnemar", "did_best_corr", "cka"} <= set(shared["statistic"])
    # specificity control on real outputs: B's labels sent through a wrong category map agree with nothing
    pairs = pd.read_parquet(results / "pairs" / "main" / "one_to_one" / "A1_B1.parquet")
    labels_b = pd.read_parquet(results / "concepts" / "labels" / "B" / "L1.parquet").set_index("latent")["concept"]
    wrong = {"animal": "color", "color": "animal"}
    result = cell_agreement(pairs["a"].to_numpy(), pairs["b"].to_numpy(), labels.set_index("latent")["concept"],
                            labels_b.map(wrong), n_permutations=2000)
    assert result.overall.p > 0.05


def test_e2e_steering_summary_contract_and_valid_p_values(e2e):
    workdir, config = e2e
    results = workdir / "results" / "e2e"
    m = config["steering"]["null_draws"]
    table = pd.read_csv(results / "summary" / "steering_main.csv")
    assert list(table.columns[:13]) == ["concept", "layer_a", "layer_b", "method", "alpha", "self_kl", "self_p",
                                        "keyword_mass_self", "transfer_agreement", "transfer_p", "transfer_p_holm",
                                        "keyword_mass_transfer", "kl_transfer"]
    assert set(table["method"]) == {"pairing", "procrustes"} and set(table["alpha"]) == {0.5, 1.0}
    tested = table[table["status"].isin(["tested", "underpowered"])]  # both carry a transfer p
    assert len(tested) > 0 and (tested["alpha"] == 0.5).all()
    assert (table.loc[table["status"] == "underpowered", "transfer_p_holm_min"] >= 0.05).all()
    assert tested["transfer_p"].between(1 / (m + 1) - 1e-12, 1).all()
    assert (tested["transfer_p_holm"] >= tested["transfer_p"] - 1e-12).all()
    assert table.loc[table["status"].isin(["broken_a", "broken_b"]), "transfer_p"].isna().all()
    for concept in ("animal", "color"):
        record = json.loads((results / "steering" / "main" / concept / "A1_B1.json").read_text())
        assert record["hook_a"] == "blocks.1.hook_resid_post" and record["provenance"]["comparison"] == "main"


def test_e2e_report_renders(e2e):
    workdir, config = e2e
    report = workdir / "report.html"
    result = snakemake(workdir, "--configfile", str(workdir / "config.yaml"), "--report", str(report), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert report.stat().st_size > 100_000
    assert "comparisons_one_to_one" in report.read_text(errors="replace")


def _reversed_keys(value):
    """The same config with every mapping's keys in reverse order (what another YAML dumper may write)."""
    if isinstance(value, dict):
        return {key: _reversed_keys(value[key]) for key in reversed(list(value))}
    if isinstance(value, list):
        return [_reversed_keys(item) for item in value]
    return value


def test_e2e_reordered_config_keys_plan_nothing(e2e):
    workdir, _ = e2e
    _settled_mtimes(workdir)
    config = yaml.safe_load((workdir / "config.yaml").read_text())
    (workdir / "reordered.yaml").write_text(yaml.safe_dump(_reversed_keys(config), sort_keys=False))
    result = snakemake(workdir, "--configfile", str(workdir / "reordered.yaml"), "-n", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Nothing to be done" in result.stdout + result.stderr, (result.stdout + result.stderr)[-3000:]


def test_e2e_missing_junk_file_stops_before_any_job_and_keeps_outputs(e2e):
    workdir, _ = e2e
    before = _settled_mtimes(workdir)
    edited = yaml.safe_load((workdir / "config.yaml").read_text())
    edited["pairings"]["mutual"]["junk_tokens"] = "junk/tpyo.txt"
    (workdir / "typo.yaml").write_text(yaml.safe_dump(edited))
    result = snakemake(workdir, "--configfile", str(workdir / "typo.yaml"), timeout=300)
    assert result.returncode != 0
    assert "pairings.mutual.junk_tokens" in result.stderr and "junk/tpyo.txt" in result.stderr
    assert _mtimes(workdir / "results" / "e2e") == before


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
    # steering is one job per comparison (cost: one model load for all concepts), so it re-runs whole
    assert not any(("/animal/" in path or path.endswith("/animal.parquet")) and not path.startswith("steering/")
                   for path in changed)
    assert not any(path.startswith(("codes/", "corr/", "pairs/", "scores/")) for path in changed)


# ---------------------------------------------------------------- two tokenizers (issue 15)


@pytest.fixture(scope="module")
def cross_tokenizer(tmp_path_factory):
    """configs/toy-cross-tokenizer.yaml without its same-tokenizer reference (B, `main`), to save time: word-level
    A against BPE D on aligned word ends; only the targets the checks read (no concept subspaces, no figures)."""
    workdir = tmp_path_factory.mktemp("cross_tokenizer")
    config = yaml.safe_load((REPO / "configs" / "toy-cross-tokenizer.yaml").read_text())
    del config["models"]["B"], config["comparisons"]["main"]
    config["semantic"]["concepts"] = [str(REPO / "configs" / "concepts" / "toy" / "*.yaml")]
    (workdir / "config.yaml").write_text(yaml.safe_dump(config, allow_unicode=True))
    ids = {"exp": config["experiment"], "cmp": "cross_tokenizer", "pairing": "one_to_one", "la": 1, "lb": 1}
    targets = [layout.fill(layout.EVIDENCE_TABLE, table="concept_agreement", **ids), layout.fill(layout.SUMMARY, **ids),
               layout.fill(layout.BROWSER, **ids)]
    result = snakemake(workdir, *targets, "--configfile", str(workdir / "config.yaml"))
    assert result.returncode == 0, result.stderr[-5000:]
    return workdir / "results" / config["experiment"]


def test_cross_tokenizer_aligns_every_word_end_and_recovers_concepts(cross_tokenizer):
    from featsim.alignment import open_alignment
    from featsim.stores import open_codes, open_tokens

    results = cross_tokenizer
    pairs, attrs = open_alignment(results / "alignment" / "tokens" / "D" / "word.zarr")
    assert attrs["word_end_share_a"] >= 0.9 and attrs["word_end_share_b"] >= 0.9  # Done-when: >= 90% of word ends
    words, pieces = open_tokens(results / "tokens.zarr"), open_tokens(results / "tokens" / "D.zarr")
    assert pieces.n_unmasked > 1.5 * words.n_unmasked  # D's BPE cuts most words into several tokens
    assert open_codes(results / "codes" / "D" / "L1.zarr").n_tokens == pieces.n_unmasked  # codes at D's own positions
    agreement = pd.read_csv(results / "summary" / "concept_agreement_one_to_one.csv")
    overall = agreement[(agreement["comparison"] == "cross_tokenizer") & agreement["concept"].isna()]
    assert len(overall) > 0 and (overall["status"] == "scored").all() and (overall["p_holm"] < 0.05).all()
    scores = pd.read_csv(results / "summary" / "cross_tokenizer" / "one_to_one.csv")
    assert scores["significant"].all()
    labels_d = pd.read_parquet(results / "labels" / "D" / "L1.parquet")  # D's own tokens: word pieces ...
    examples = [(token, word) for tokens, words in zip(labels_d["top_tokens"], labels_d["top_words"])
                for token, word in zip(tokens, words)]
    assert sum(token != word for token, word in examples) > len(examples) / 4
    corpus_words = set((results / "toy" / "corpus" / "heldout.txt").read_text().split())
    assert sum(word in corpus_words for _, word in examples) > 0.9 * len(examples)  # ... rebuilt into whole words
    assert (results / "browser" / "cross_tokenizer" / "one_to_one" / "A1_B1.html").stat().st_size > 0
