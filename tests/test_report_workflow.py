"""The report stage as a workflow: rules/report.smk on synthetic upstream files, then `snakemake --report`.

Upstream targets (scores, pairs, semantic scores, labels, codes, tokens) are written here as plain files, so
Snakemake treats them as sources and runs only the report stage's rules and scripts.
"""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import yaml
from synthetic_results import write_pairs, write_scores, write_semantic

from featsim.stores import write_codes, write_tokens

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
COMPARISONS = {"main": {"a": "A", "b": "B", "description": "A vs B"},
               "control": {"a": "A", "b": "C", "description": "shares syntax, not concepts"}}
CONCEPTS = ["animal", "color"]
D_SAE, N_TOKENS = 30, 400


def _labels(d_sae: int, model: str) -> pd.DataFrame:
    return pd.DataFrame({
        "latent": np.arange(d_sae),
        "n_active": np.full(d_sae, 12),
        "top_values": [[2.0, 1.5] for _ in range(d_sae)],
        "top_token_ids": [[latent, latent + 1] for latent in range(d_sae)],
        "top_tokens": [[f"tok{latent}", f"tok{latent + 1}"] for latent in range(d_sae)],
        "top_contexts": [[f"{model} context of [[tok{latent}]] here", f"second [[tok{latent + 1}]] one"]
                         for latent in range(d_sae)],
    })


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    repo = REPO
    work = tmp_path_factory.mktemp("report_wf")
    root = work / "results" / "toy"
    concept_dir = work / "concepts"
    concept_dir.mkdir()
    for concept in CONCEPTS:
        (concept_dir / f"{concept}.yaml").write_text(yaml.safe_dump({"name": concept, "description": f"the {concept} concept",
                                                                   "case": "insensitive", "keywords": [concept]}))
    config = {
        "experiment": "toy",
        "data": {"source": "toy"},
        "models": {name: {"lm": {"source": "toy"}, "layers": [0], "sae": {"source": "toy"}} for name in "ABC"},
        "comparisons": COMPARISONS,
        "pairings": {"one_to_one": {"strategy": "one_to_one"}},
        "metrics": ["svcca", "rsa"],
        "null": {"permutations": 199, "seed": 0},
        "semantic": {"concepts": [str(concept_dir / "*.yaml")], "pairing": "one_to_one"},
        "report": {"null_histograms": 1, "browser_pairs": 5, "scatter_pairs": 2},
    }
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    rng = np.random.default_rng(0)
    n_sequences = 20  # N_TOKENS unmasked positions: the browser reads the held-out split from them
    write_tokens(root / "tokens.zarr", rng.integers(0, 50, (n_sequences, N_TOKENS // n_sequences)).astype(np.int32),
                 np.ones((n_sequences, N_TOKENS // n_sequences), dtype=bool), {"vocab_hash": "synthetic"})
    for model in "ABC":
        codes = sp.random(N_TOKENS, D_SAE, density=0.1, random_state=rng, format="csr", dtype=np.float32)
        write_codes(root / "codes" / model / "L0.zarr", codes, {"model": model, "layer": 0})
        path = root / "labels" / model / "L0.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        _labels(D_SAE, model).to_parquet(path)
    for seed, cmp in enumerate(COMPARISONS):
        write_scores(root, cmp, "one_to_one", config["metrics"], [0], [0], seed=seed)
        write_pairs(root, cmp, "one_to_one", [0], [0], d_a=D_SAE, d_b=D_SAE, seed=seed)
        write_semantic(root, cmp, "one_to_one", CONCEPTS, config["metrics"], [0], [0], seed=seed)
    (work / "Snakefile").write_text(f"""
from featsim.config import load_schema, validate_config
configfile: "config.yaml"
validate_config(config, load_schema())
report: "{repo}/workflow/report/workflow.rst"
include: "{repo}/rules/common.smk"
include: "{repo}/rules/report.smk"

rule all:
    input:
        expand("results/toy/summary/{{cmp}}/{{kind}}one_to_one.csv", cmp=COMPARISONS, kind=["", "semantic_"]),
        expand("results/toy/figures/{{cmp}}/one_to_one/pairs_n.png", cmp=COMPARISONS),
        expand("results/toy/figures/{{cmp}}/one_to_one/semantic_svcca.png", cmp=COMPARISONS),
        expand("results/toy/figures/comparisons_{{kind}}one_to_one_svcca.png", kind=["", "semantic_"]),
        "results/toy/summary/comparisons_one_to_one.csv",
        expand("results/toy/browser/{{cmp}}/one_to_one/A0_B0.html", cmp=COMPARISONS),
""")
    return work


def _snakemake(workdir, *args):
    command = [sys.executable, "-m", "snakemake", "--cores", "2", "--workflow-profile", "none",
               "-d", str(workdir), "-s", str(workdir / "Snakefile"), *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    return result


def test_report_stage_runs_and_report_renders(workdir):
    _snakemake(workdir)
    root = workdir / "results" / "toy"
    summary = pd.read_csv(root / "summary" / "main" / "one_to_one.csv")
    assert len(summary) == 2 and set(summary["metric"]) == {"svcca", "rsa"}
    assert (root / "summary" / "main" / "one_to_one.provenance.json").exists()
    assert len(pd.read_csv(root / "summary" / "control" / "semantic_one_to_one.csv")) == 2 * len(CONCEPTS)
    overview = pd.read_csv(root / "summary" / "comparisons_one_to_one.csv")
    assert set(overview["comparison"]) == set(COMPARISONS) and set(overview["scope"]) == {"whole space", "concepts"}
    for name in ("svcca_observed", "rsa_z", "svcca_null", "pairs_correlation", "pairs_many_to_one"):
        assert (root / "figures" / "main" / "one_to_one" / f"{name}.png").stat().st_size > 1000
    assert (root / "figures" / "comparisons_one_to_one_pairs.png").stat().st_size > 1000
    page = (root / "browser" / "main" / "one_to_one" / "A0_B0.html").read_text()
    assert "<mark>" in page and "data:image/png;base64," in page
    report = workdir / "report.html"
    _snakemake(workdir, "--report", str(report))
    text = report.read_text()
    assert "1 Overview (all comparisons)" in text and "2 Comparison main" in text
    assert "System Message" not in text  # every caption is valid reStructuredText
    assert "shuffled-pairing null" in text and "shares syntax, not concepts" in text
