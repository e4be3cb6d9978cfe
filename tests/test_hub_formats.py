"""Real hub formats, offline: SAE repos as users download them (pre-6.0 sae-lens cfg.json, Gemma Scope
params.npz through sae-lens's registry loader), hub names checked before any job, dataset revisions and
data files, and the one tokenizer-identity rule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from featsim.errors import ConfigError
from rehearsal import hub_fixtures as hub
from rehearsal.site.sitecustomize import register_releases

REPO = Path(__file__).resolve().parents[1]
D_IN = 24


@pytest.fixture
def registry(tmp_path):
    """Adds releases to sae-lens's registry (the same code the rehearsal's sitecustomize runs); removed after."""
    import sae_lens.loading.pretrained_saes_directory as directory_module

    added: list[str] = []

    def add(releases: dict) -> None:
        path = tmp_path / f"registry{len(added)}.yaml"
        path.write_text(yaml.safe_dump(releases))
        register_releases(directory_module, str(path))
        added.extend(releases)

    yield add
    for release in added:
        directory_module.get_pretrained_saes_directory().pop(release, None)


def planted_sae(seed: int = 0, rank: int = 8) -> tuple[dict, np.ndarray]:
    """A PCA SAE of random low-rank data, and data it reconstructs well."""
    rng = np.random.default_rng(seed)
    rows = rng.normal(size=(500, rank)) @ rng.normal(size=(rank, D_IN)) + rng.normal(size=D_IN) * 3
    rows += 0.01 * rng.normal(size=rows.shape)
    return hub.pca_sae(rows, rank), rows.astype(np.float32)


def relu_code(sae: dict, x: np.ndarray, b_dec_in: bool = True) -> np.ndarray:
    """Standard / JumpReLU(threshold 0) code written plainly in numpy."""
    pre = (x - sae["b_dec"] if b_dec_in else x) @ sae["W_enc"] + sae["b_enc"]
    return np.maximum(pre, 0.0)


# ---------------------------------------------------------------- defect 1: sae-lens config defaulting


@pytest.mark.parametrize("via", ["hub_repo", "registered_release"])
def test_pre_6_0_sae_lens_repo_keeps_its_hook(via, tmp_path, hub_cache, registry):
    """A cfg.json written before sae-lens 6 (gemma-2b-res-jb's layout) loads with its hook_name and metadata.

    Failed before: featsim applied sae-lens's config defaulting a second time and lost `hook_name`.
    """
    from featsim.saes import SAESpec, load_sae, sae_info

    sae, rows = planted_sae()
    folder = "tiny_blocks.3.hook_resid_post_16"
    hub.write_sae_lens_pre6(tmp_path / "src" / folder, sae, "blocks.3.hook_resid_post", 3, "pythia-14m")
    hub.install_repo(hub_cache, "someone/tiny-res-jb", tmp_path / "src")
    if via == "hub_repo":
        config = {"source": "sae_lens", "release": "someone/tiny-res-jb", "id": "tiny_blocks.{layer}.hook_resid_post_16"}
    else:
        registry({"tiny-res-jb": hub.registry_release("tiny-res-jb", "someone/tiny-res-jb", "pythia-14m",
                                                      {"blocks.3.hook_resid_post": folder})})
        config = {"source": "sae_lens", "release": "tiny-res-jb", "id": "blocks.{layer}.hook_resid_post"}
    spec = SAESpec.from_config("B", config)
    info = sae_info(spec, 3, tmp_path)
    assert (info.hook_name, info.d_in, info.d_sae) == ("blocks.3.hook_resid_post", D_IN, 16)
    assert (info.model_name, info.context_size, info.prepend_bos) == ("pythia-14m", 64, True)
    loaded, loaded_info = load_sae(spec, 3, tmp_path)
    assert loaded_info.hook_name == "blocks.3.hook_resid_post"
    x = rows[:50]
    np.testing.assert_allclose(loaded.encode(torch.as_tensor(x)).detach().numpy(), relu_code(sae, x),
                               rtol=1e-4, atol=1e-4)


def test_gemma_scope_params_npz_loads_through_sae_lens_registry_loader(tmp_path, hub_cache, registry):
    """A Gemma Scope folder (params.npz, no config) of a registered release with conversion_func gemma_2.

    Failed before: the gemma_2 config (no sae_lens_version) was defaulted twice and lost its hook_name.
    """
    from featsim.saes import SAESpec, load_sae, sae_info

    sae, rows = planted_sae(seed=1)
    folder = "layer_5/width_16k/average_l0_8"
    hub.write_gemma_scope(tmp_path / "src" / folder, sae)
    hub.install_repo(hub_cache, "someone/gemma-scope-2b-pt-res", tmp_path / "src")
    registry({"tiny-scope": hub.registry_release(
        "tiny-scope", "someone/gemma-scope-2b-pt-res", "gemma-2-2b", {"layer_5/width_16k/canonical": folder},
        conversion_func="gemma_2", config_overrides={"d_in": D_IN, "d_sae": 16})})
    spec = SAESpec.from_config("B", {"source": "sae_lens", "release": "tiny-scope",
                                     "id": "layer_{layer}/width_16k/canonical"})
    info = sae_info(spec, 5, tmp_path)
    assert (info.hook_name, info.d_in, info.d_sae, info.architecture) == ("blocks.5.hook_resid_post", D_IN, 16,
                                                                          "jumprelu")
    loaded, _ = load_sae(spec, 5, tmp_path)
    x = rows[:50]
    with np.load(hub_cache.glob("models--someone--gemma-scope-2b-pt-res/snapshots/*/" + folder + "/params.npz")
                 .__next__()) as params:
        stored = dict(params)
    expected = relu_code({"W_enc": stored["W_enc"], "b_enc": stored["b_enc"], "b_dec": stored["b_dec"]}, x,
                         b_dec_in=False)
    np.testing.assert_allclose(loaded.encode(torch.as_tensor(x)).detach().numpy(), expected, rtol=1e-4, atol=1e-4)
    reconstruction = loaded.decode(loaded.encode(torch.as_tensor(x))).detach().numpy()
    assert ((reconstruction - x) ** 2).sum() / ((x - x.mean(0)) ** 2).sum() < 0.01


# ---------------------------------------------------------------- defect 8: hub names checked offline


def _config(name: str) -> dict:
    from featsim.config import load_config

    return load_config(REPO / "configs" / name)


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "configs").glob("*.yaml")))
def test_real_configs_use_known_hub_names(name):
    from featsim.hubnames import check_hub_names

    assert check_hub_names(_config(name)) == []


def test_misspelt_hub_names_are_rejected_offline_naming_the_key():
    """Failed before: nothing checked these until the activations/codes jobs ran."""
    from featsim.hubnames import check_hub_names

    config = _config("gemma1-vs-gemma2.yaml")
    config["models"]["gemma1"]["lm"]["name"] = "google/gemma-2bb"
    config["models"]["gemma1"]["sae"]["release"] = "gemma-2b-res-jbb"
    config["models"]["gemma2"]["sae"]["id"] = "layer_{layer}/width_16k/canonicl"
    problems = check_hub_names(config)
    assert len(problems) == 2 + len(config["models"]["gemma2"]["layers"])
    assert "models.gemma1.lm.name" in problems[0] and "'google/gemma-2b'" in problems[0]
    assert "models.gemma1.sae.release" in problems[1] and "'gemma-2b-res-jb'" in problems[1]
    assert all("models.gemma2.sae.id" in p and "'layer_2/width_16k/canonical'" in problems[2] for p in problems[2:])


def test_unknown_id_of_a_release_and_unregistered_hub_repos():
    from featsim.hubnames import check_hub_names

    config = _config("gemma1-vs-gemma2.yaml")
    config["models"]["gemma2"]["layers"] = [2, 99]
    problems = check_hub_names(config)
    assert len(problems) == 1 and "layer_99/width_16k/canonical" in problems[0]
    config["models"]["gemma2"]["layers"] = [2]
    config["models"]["gemma1"]["sae"]["release"] = "someone/my-own-saes"  # a plain hub repo: sae-lens loads it
    config["models"]["gemma2"]["lm"] = {"source": "local", "path": "/nowhere", "architecture": "gemma-2-2bb"}
    problems = check_hub_names(config)
    assert len(problems) == 1 and "models.gemma2.lm.architecture" in problems[0]


# ---------------------------------------------------------------- defect 5: dataset revision, data files, name


def test_hf_dataset_revision_and_data_files_read_from_the_hub_cache_offline(tmp_path, hub_cache, monkeypatch):
    """A parquet export (`refs/convert/parquet`) in the HF cache, read offline through datasets.

    Failed before: data.hf had no revision/data_files, and datasets' hub loader needs the network.
    """
    import datasets
    import pandas as pd

    from featsim.tokens import DataConfig, hf_documents

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets_cache")
    docs = [f"document {i} " + "word " * (i % 7) for i in range(30)]
    source = tmp_path / "export"
    for shard, part in enumerate((docs[:12], docs[12:24], docs[24:])):
        path = source / "plain_text" / "partial-train" / f"{shard:04d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"text": part, "id": range(len(part))}).to_parquet(path)
    (source / "other").mkdir()
    pd.DataFrame({"text": ["not this"]}).to_parquet(source / "other" / "0000.parquet")
    hub.install_repo(hub_cache, "someone/webtext", source, repo_type="dataset", revision="refs/convert/parquet")

    def read(**hf):
        data = DataConfig.from_config({"source": "hf", "hf": {"path": "someone/webtext", **hf}, "context_length": 8,
                                       "n_tokens": 64})
        return list(hf_documents(data, tmp_path))

    export = {"revision": "refs/convert/parquet"}
    assert read(**export, data_files="plain_text/partial-train/*.parquet") == docs
    assert read(**export, data_files=["plain_text/partial-train/0001.parquet"], streaming=False) == docs[12:24]
    with pytest.raises(ConfigError) as err:  # main is not cached: the error says to prefetch
        read(data_files="plain_text/partial-train/*.parquet")
    assert err.value.key == "data.hf.path" and "featsim prefetch" in str(err.value)


def test_hf_dataset_config_name_selects_a_configuration(tmp_path, monkeypatch):
    """`data.hf.name` picks a configuration declared in the dataset card, as on the hub."""
    import datasets
    import pandas as pd

    from featsim.tokens import DataConfig, hf_documents

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets_cache")
    root = tmp_path / "repo"
    for config_name, texts in {"en": ["one", "two"], "fr": ["un", "deux"]}.items():
        (root / config_name).mkdir(parents=True)
        pd.DataFrame({"text": texts}).to_parquet(root / config_name / "train.parquet")
    (root / "README.md").write_text("---\nconfigs:\n- config_name: en\n  data_files: en/*.parquet\n"
                                    "- config_name: fr\n  data_files: fr/*.parquet\n---\n")
    data = DataConfig.from_config({"source": "hf", "hf": {"path": str(root), "name": "fr"}, "context_length": 8,
                                   "n_tokens": 64})
    assert list(hf_documents(data, tmp_path)) == ["un", "deux"]


# ---------------------------------------------------------------- defect 7: one tokenizer-identity rule


def _word_tokenizer(vocab: list[str]):
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(WordLevel(vocab={t: i for i, t in enumerate(vocab)}, unk_token="<unk>"))
    backend.pre_tokenizer = WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", eos_token="<eos>")


def test_tokenizer_identity_rule_is_one_function_used_by_both_checks(tmp_path):
    """Extra added tokens in a model's tokenizer are fine, a moved token is not, in the tokens check and in
    the activations check alike. Failed before: tokens.py demanded exact equality."""
    import featsim.activations as activations
    from featsim.tokens import check_shared_tokenizer, vocab_compatible

    base = ["<unk>", "<eos>", "a", "b", "c"]
    experiment, extended, moved = _word_tokenizer(base), _word_tokenizer(base + ["<image>"]), _word_tokenizer(
        ["<unk>", "<eos>", "b", "a", "c"])
    assert vocab_compatible(experiment.get_vocab(), extended.get_vocab())
    assert not vocab_compatible(experiment.get_vocab(), moved.get_vocab())
    assert not vocab_compatible(extended.get_vocab(), experiment.get_vocab())  # a token the model lacks
    tokenizers = {"ext": extended, "moved": moved}
    models = {"A": {"lm": {"source": "local", "path": "ext"}}}
    check_shared_tokenizer(experiment, "ref", models, tmp_path, loader=tokenizers.__getitem__)
    with pytest.raises(ConfigError) as err:
        check_shared_tokenizer(experiment, "ref", {**models, "B": {"lm": {"source": "local", "path": "moved"}}},
                               tmp_path, loader=tokenizers.__getitem__)
    assert err.value.key == "models.B.lm"
    assert activations.vocab_compatible is vocab_compatible  # the activations check imports the one rule


# ---------------------------------------------------------------- defect 9: what FVU the Gemma-1 gate sees


def test_gemma_config_measures_fvu_on_text_positions_with_bos_masked(tmp_path):
    """The Gemma config starts rows with <bos> and masks it, so the max_fvu gate (kept at 1.0, explicitly)
    sees text positions only. Planted: a <bos> activation 100x the norm of the rest, which an SAE that
    reconstructs text well does not reconstruct, drives FVU above 1 when counted, not when masked.
    Failed before: the config relied on defaults and did not state the gate or the <bos> handling."""
    from featsim.saes import QualityAccumulator
    from featsim.tokens import DataConfig, build_token_set

    config = _config("gemma1-vs-gemma2.yaml")
    assert config["data"]["prepend_bos"] is True and config["data"]["mask"]["drop_bos"] is True
    assert config["models"]["gemma1"]["sae"]["max_fvu"] == 1.0
    gemma_like = _word_tokenizer(["<unk>", "<eos>", "<bos>", "a", "b", "c"])
    gemma_like.bos_token = "<bos>"
    data = DataConfig.from_config({**config["data"], "source": "local", "n_tokens": 64, "context_length": 8})
    token_set = build_token_set(data, gemma_like, "gemma-like", tmp_path, documents=["a b c a b c a"] * 12)
    assert (token_set.tokens[:, 0] == gemma_like.bos_token_id).all() and not token_set.mask[:, 0].any()
    np.testing.assert_array_equal(token_set.mask, token_set.tokens != gemma_like.bos_token_id)  # separators too

    rng = np.random.default_rng(0)
    acts = rng.normal(size=token_set.tokens.shape + (D_IN,))
    acts[token_set.tokens == gemma_like.bos_token_id] = 100.0 * rng.normal(size=D_IN)  # <bos>: one massive vector
    text = acts[token_set.mask]
    # an SAE that is good on text and saturates beyond the text's range, as a ReLU dictionary does
    reconstruction_of = lambda x: text.mean(0) + 0.9 * np.clip(x - text.mean(0), -4, 4)  # noqa: E731

    def fvu(rows):
        quality = QualityAccumulator(D_IN, 1, "cpu")
        x = torch.as_tensor(rows)
        quality.update(x, torch.as_tensor(reconstruction_of(rows)), torch.ones(len(rows), 1))
        return quality.result().fvu

    assert fvu(text) < 0.05 < 1.0 < fvu(acts.reshape(-1, D_IN))


def test_featsim_validate_rejects_misspelt_hub_names(tmp_path, capsys):
    """Through the start-up checks that `featsim validate` and the Snakefile share (featsim.preflight)."""
    from featsim.cli import main

    config = yaml.safe_load((REPO / "configs" / "gemma1-vs-gemma2.yaml").read_text())
    config["models"]["gemma2"]["lm"]["name"] = "google/gemma-2-2bb"
    config["models"]["gemma1"]["sae"]["id"] = "blocks.{layer}.hook_resid_pots"
    config["semantic"]["concepts"] = [str(p) for p in sorted((REPO / "configs" / "concepts" / "study").glob("*.yaml"))]
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(config))
    assert main(["validate", str(tmp_path / "bad.yaml"), "--root", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "models.gemma2.lm.name" in err and "'google/gemma-2-2b'" in err
    assert "models.gemma1.sae.id" in err and "'blocks.6.hook_resid_post'" in err
