"""Start-up checks (`featsim validate` = the Snakefile's checks): every config mistake knowable before a
job is reported with the key to fix, and a junk-file typo on an existing experiment stops the run
instead of silently keeping old outputs."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from featsim.config import load_config, read_config_file, validate_config
from featsim.errors import ConfigError
from featsim.preflight import PreflightError, Roots, known_shape, preflight, require_preflight

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def raw():
    """The default config as written (not yet validated)."""
    return yaml.safe_load((REPO / "config.yaml").read_text())


def errors_of(config: dict, root: Path = REPO) -> dict[str, str]:
    validate_config(config)
    return {finding.key: finding.message for finding in preflight(config, root, workflow_dir=REPO)
            if finding.severity == "error"}


def test_default_and_experiment_configs_pass(raw):
    assert errors_of(raw) == {}
    for path in sorted((REPO / "configs").glob("*.yaml")):
        assert errors_of(read_config_file(path)) == {}, path


def test_concept_problems_name_the_file(raw, tmp_path):
    (tmp_path / "broken.yaml").write_text("name: x\ndescription: y\ncase: insensitive\nkeywords: [cat, '']\n")
    raw["semantic"]["concepts"] = [str(tmp_path / "broken.yaml")]
    assert "broken.yaml" in errors_of(copy.deepcopy(raw))["semantic.concepts"]
    (tmp_path / "broken.yaml").write_text("name: [unclosed\n")
    assert "not valid YAML" in errors_of(copy.deepcopy(raw))["semantic.concepts"]
    raw["semantic"]["concepts"] = [str(tmp_path / "nothing-*.yaml")]
    assert "matches no file" in errors_of(raw)["semantic.concepts"]


def test_missing_junk_file_and_a_bare_token_string_are_errors(raw, tmp_path):
    raw["pairings"]["one_to_one"]["junk_tokens"] = "junk/typo.txt"
    raw["pairings"]["hungarian"]["junk_tokens"] = "."
    errors = errors_of(raw, tmp_path)
    assert "'junk/typo.txt' does not exist" in errors["pairings.one_to_one.junk_tokens"]
    assert "['.']" in errors["pairings.hungarian.junk_tokens"]  # says how to write it inline


def test_junk_file_relative_to_the_working_directory(raw, tmp_path):
    (tmp_path / "junk.txt").write_text(".\n,\n")
    raw["pairings"]["one_to_one"]["junk_tokens"] = "junk.txt"
    assert errors_of(raw, tmp_path) == {}  # the shipped concept lists are found in the workflow directory


def test_layers_beyond_the_toy_depth_and_context_beyond_the_toy_model(raw):
    raw["models"]["B"]["layers"] = [0, 1, 2]
    raw["data"]["context_length"] = 128
    errors = errors_of(raw)
    assert "[2]" in errors["models.B.layers"] and "2 blocks" in errors["models.B.layers"]
    assert "64 positions" in errors["data.context_length"]


def test_token_budget_below_one_row(raw):
    raw["data"]["n_tokens"] = 32
    assert "less than one row" in errors_of(raw)["data.n_tokens"]


def test_a_model_compared_with_itself_is_a_warning(raw):
    raw["comparisons"]["self"] = {"a": "A", "b": "A"}
    validate_config(raw)
    warnings = [f for f in preflight(raw, REPO, REPO) if f.severity == "warning"]
    assert [f.key for f in warnings] == ["comparisons.self"]
    seen = []
    require_preflight(raw, REPO, warn=seen.append)  # a warning does not stop the run
    assert "itself" in seen[0]


def test_every_error_is_reported_at_once(raw):
    raw["data"]["n_tokens"] = 32
    raw["models"]["A_sae2"]["layers"] = [5]
    raw["steering"]["layer_pairs"] = [[0, 0], [2, 2]]
    validate_config(raw)
    with pytest.raises(PreflightError) as caught:
        require_preflight(raw, REPO, workflow_dir=REPO)
    assert {f.key for f in caught.value.findings} == {"data.n_tokens", "models.A_sae2.layers", "steering.layer_pairs"}


def test_hub_model_depth_from_the_hugging_face_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants

    snapshot = tmp_path / "models--EleutherAI--pythia-70m" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps({"num_hidden_layers": 6, "max_position_embeddings": 2048}))
    (tmp_path / "models--EleutherAI--pythia-70m" / "refs").mkdir()
    (tmp_path / "models--EleutherAI--pythia-70m" / "refs" / "main").write_text("a" * 40)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    shape = known_shape({"source": "hf", "name": "EleutherAI/pythia-70m"}, Roots(REPO))
    assert (shape.n_layers, shape.n_ctx) == (6, 2048)
    assert known_shape({"source": "hf", "name": "EleutherAI/pythia-160m"}, Roots(REPO)) is None  # not cached: unknown
    config = read_config_file(REPO / "configs" / "pythia-70m-vs-160m.yaml")
    model = next(name for name, entry in config["models"].items()
                 if entry.get("lm", {}).get("name") == "EleutherAI/pythia-70m")
    config["models"][model]["layers"] = [1, 6]
    assert "[6]" in errors_of(config)[f"models.{model}.layers"]


def test_a_section_written_twice_is_an_error(tmp_path):
    text = (REPO / "config.yaml").read_text() + "\nnull:\n  permutations: 10\n"
    (tmp_path / "twice.yaml").write_text(text)
    with pytest.raises(ConfigError, match="written twice"):
        load_config(tmp_path / "twice.yaml")


def featsim_cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "featsim.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=120)


def test_validate_cli_reports_missing_file_in_one_line_and_preflight_errors(tmp_path, raw):
    missing = featsim_cli("validate", str(tmp_path / "missing.yaml"))
    assert missing.returncode == 1
    assert "Traceback" not in missing.stderr and "does not exist" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1
    raw["pairings"]["one_to_one"]["junk_tokens"] = "junk/typo.txt"
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(raw))
    bad = featsim_cli("validate", str(tmp_path / "bad.yaml"))
    assert bad.returncode == 1 and "pairings.one_to_one.junk_tokens" in bad.stderr


# ---------------------------------------------------------------- tokenizers (issue 15)


def _with_bpe_model(raw, align=None):
    raw["models"]["D"] = {"lm": {"source": "toy", "toy": {"tokenizer": "bpe", "bpe_vocab_size": 64}}, "layers": [1],
                          "sae": {"source": "toy"}}
    raw["comparisons"]["cross_tokenizer"] = {"a": "A", "b": "D", **({"align": align} if align else {})}
    return raw


def test_two_tokenizers_without_alignment_name_the_comparison(raw):
    errors = errors_of(_with_bpe_model(raw))
    assert "declare `align" in errors["comparisons.cross_tokenizer"]
    assert "toy-bpe:D" in errors["comparisons.cross_tokenizer"]


def test_alignment_declared_passes_and_gives_the_model_its_own_store(raw):
    from featsim import tokenstores

    config = _with_bpe_model(raw, align="word")
    assert errors_of(config) == {}
    assert tokenstores.token_store_names(config)["D"] == "D"
    assert tokenstores.token_store_names(config)["A"] == tokenstores.EXPERIMENT_STORE
    assert tokenstores.comparison_alignment(config, "cross_tokenizer") == ("tokens", "D", "word")
    assert tokenstores.comparison_alignment(config, "main") is None


def test_a_model_reading_two_stores_is_refused_and_steering_needs_one_token_set(raw):
    config = _with_bpe_model(raw, align="word")
    config["models"]["D2"] = {"lm_from": "D", "layers": [1], "sae": {"source": "toy", "toy": {"seed": 1}}}
    config["comparisons"]["d_vs_a2"] = {"a": "A_sae2", "b": "D2"}  # D2 reads D's store: needs align too
    config["steering"]["comparisons"] = ["main", "cross_tokenizer"]
    errors = errors_of(config)
    assert "different tokenizers" in errors["comparisons.d_vs_a2"]
    assert "cross_tokenizer" in errors["steering.comparisons"]


def test_alignment_of_one_tokenizer_is_a_warning_and_an_unknown_mode_an_error(raw):
    raw["comparisons"]["main"]["align"] = "word"
    validate_config(raw)
    warnings = {f.key: f.message for f in preflight(raw, REPO, workflow_dir=REPO) if f.severity == "warning"}
    assert "nothing to align" in warnings["comparisons.main.align"]
    raw["comparisons"]["main"]["align"] = "char"
    with pytest.raises(ConfigError) as err:
        validate_config(raw)
    assert err.value.key == "comparisons.main.align"


def test_hub_tokenizers_of_an_aligned_comparison_get_a_store_each():
    from featsim import tokenstores

    config = load_config(REPO / "configs" / "gpt2-vs-pythia-160m.yaml")
    stores = tokenstores.token_store_names(config)
    assert stores["gpt2"] == tokenstores.EXPERIMENT_STORE and stores["pythia160m"] == "pythia160m"
    assert tokenstores.comparison_row_inputs(config, "x", "main") == {
        "tokens": "results/x/tokens.zarr", "tokens_b": "results/x/tokens/pythia160m.zarr",
        "alignment": "results/x/alignment/tokens/pythia160m/word.zarr"}
