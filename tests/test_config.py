"""Config validation: defaults filled, every mistake stops with the offending key named."""

import copy

import pytest
import yaml

from featsim.config import comparison_layers, load_config, validate_config
from featsim.errors import ConfigError


@pytest.fixture
def base(repo):
    return yaml.safe_load((repo / "config.yaml").read_text())


def test_default_config_is_valid_and_defaults_are_filled(repo):
    config = load_config(repo / "config.yaml")
    assert config["null"]["permutations"] >= 1
    assert config["correction"] == "holm"
    assert config["models"]["A"]["activation"] == "code"
    assert config["pairings"]["hungarian"]["junk_match"] is None
    assert config["legacy"] == {"layer_offset": False, "keep_special_tokens": False}


@pytest.mark.parametrize("mutate, key", [
    (lambda c: c.update(metrcs=["svcca"]), "metrcs"),
    (lambda c: c["metrics"].append("svca"), "metrics.5"),
    (lambda c: c["pairings"]["hungarian"].update(strategy="best"), "pairings.hungarian.strategy"),
    (lambda c: c["pairings"]["hungarian"].update(min_cor=0.2), "pairings.hungarian.min_cor"),
    (lambda c: c["models"]["A"]["sae"].update(sourc="x"), "models.A.sae.sourc"),
    (lambda c: c["correlation"].update(top_k="8"), "correlation.top_k"),
    (lambda c: c["comparisons"]["main"].update(b="Z"), "comparisons.main.b"),
    (lambda c: c["comparisons"]["main"].update(layers_a=[7]), "comparisons.main.layers_a"),
    (lambda c: c["models"]["A_sae2"].update(lm_from="nope"), "models.A_sae2.lm_from"),
    (lambda c: c["models"]["A"]["lm"]["toy"].update(d_modl=3), "models.A.lm.toy.d_modl"),
    (lambda c: c["models"]["B"].update(sae={"source": "sae_lens", "release": "r"}), "models.B.sae.id"),
    (lambda c: c.update(correction="bonferroni"), "correction"),
    (lambda c: c["semantic"].update(pairing="missing"), "semantic.pairing"),
])
def test_mistakes_name_the_key(base, mutate, key):
    config = copy.deepcopy(base)
    mutate(config)
    with pytest.raises(ConfigError) as info:
        validate_config(config)
    assert info.value.key == key
    assert f"'{key}'" in str(info.value)


def test_unquoted_null_key_is_read_as_the_null_section(base):
    config = copy.deepcopy(base)
    assert None in config  # config.yaml writes `null:` unquoted, as users will
    validated = validate_config(config)
    assert None not in validated and validated["null"]["permutations"] == base[None]["permutations"]


def test_model_needs_lm_or_lm_from(base):
    config = copy.deepcopy(base)
    del config["models"]["A"]["lm"]
    with pytest.raises(ConfigError, match="exactly one of 'lm' or 'lm_from'"):
        validate_config(config)


def test_comparison_layers_subset(base):
    config = copy.deepcopy(base)
    config["comparisons"]["main"]["layers_b"] = [1]
    validate_config(config)
    assert comparison_layers(config, "main", "a") == [0, 1]
    assert comparison_layers(config, "main", "b") == [1]


def test_experiment_configs_validate(repo):
    for path in sorted((repo / "configs").glob("*.yaml")):
        load_config(path)


def test_validated_config_has_one_key_order_whatever_order_it_was_written_in(repo):
    config = load_config(repo / "config.yaml")
    reordered = yaml.safe_load(yaml.safe_dump(config, sort_keys=True))
    reordered = {key: reordered[key] for key in reversed(list(reordered))}
    assert repr(validate_config(reordered)) == repr(config)
    assert list(config["models"]) == sorted(config["models"])
