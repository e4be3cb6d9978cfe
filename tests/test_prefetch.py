"""`featsim prefetch` against a local stand-in of the hub (no network): what each real config requests, and
that after prefetching into an empty HF cache the loaders run with HF_HUB_OFFLINE=1."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from featsim.prefetch import LM_FILES, plan_prefetch, prefetch
from rehearsal import hub_fixtures as hub

REPO = Path(__file__).resolve().parents[1]
OWT = ("Skylion007/openwebtext", "dataset", "refs/convert/parquet")


def _config(name: str) -> dict:
    from featsim.config import load_config

    return load_config(REPO / "configs" / name)


def _plan(config: dict) -> dict[tuple, tuple | None]:
    return {(f.repo_id, f.repo_type, f.revision): f.allow_patterns for f in plan_prefetch(config)}


def _sparsify_files(layers) -> set[str]:
    return {f"layers.{layer}/{name}" for layer in layers for name in ("cfg.json", "sae.safetensors")} | {"config.json"}


@pytest.mark.parametrize("name, sparsify", [
    ("pythia-70m-vs-160m.yaml", {"EleutherAI/sae-pythia-70m-32k": range(1, 6), "EleutherAI/sae-pythia-160m-32k": range(12)}),
    ("legacy-pythia.yaml", {"EleutherAI/sae-pythia-70m-32k": range(1, 6), "EleutherAI/sae-pythia-160m-32k": range(1, 12)}),
])
def test_pythia_configs_request_models_sparsify_hookpoints_and_one_dataset_shard(name, sparsify):
    plan = _plan(_config(name))
    assert set(plan) == {OWT, *((repo, "model", None) for repo in sparsify),
                         ("EleutherAI/pythia-70m", "model", None), ("EleutherAI/pythia-160m", "model", None)}
    assert plan[OWT] == ("plain_text/*train/0000.parquet", "README.md")
    assert plan[("EleutherAI/pythia-70m", "model", None)] == LM_FILES
    for repo, layers in sparsify.items():
        assert set(plan[(repo, "model", None)]) == _sparsify_files(layers)


def test_gemma_config_requests_the_registry_folders_of_each_layer():
    """Oracle: the folders read straight from sae-lens's pretrained_saes.yaml."""
    import importlib.util

    registry_path = Path(importlib.util.find_spec("sae_lens").origin).parent / "pretrained_saes.yaml"
    registry = yaml.safe_load(registry_path.read_text())

    def folders(release, ids):
        paths = {sae["id"]: sae["path"] for sae in registry[release]["saes"]}
        return {pattern for i in ids for pattern in (paths[i], paths[i] + "/*")}

    plan = _plan(_config("gemma1-vs-gemma2.yaml"))
    jb = (registry["gemma-2b-res-jb"]["repo_id"], "model", None)
    scope = (registry["gemma-scope-2b-pt-res-canonical"]["repo_id"], "model", None)
    assert set(plan) == {OWT, jb, scope, ("google/gemma-2b", "model", None), ("google/gemma-2-2b", "model", None)}
    assert set(plan[jb]) == folders("gemma-2b-res-jb", [f"blocks.{layer}.hook_resid_post" for layer in (6, 10, 12, 17)])
    assert set(plan[scope]) == folders("gemma-scope-2b-pt-res-canonical",
                                       [f"layer_{layer}/width_16k/canonical" for layer in (2, 6, 10, 14, 18, 22)])


def test_a_streamed_dataset_without_data_files_is_refused():
    from featsim.errors import ConfigError

    config = _config("pythia-70m-vs-160m.yaml")
    del config["data"]["hf"]["data_files"]
    with pytest.raises(ConfigError) as err:
        plan_prefetch(config)
    assert err.value.key == "data.hf.data_files"


# ---------------------------------------------------------------- a stand-in hub


class StandInHub:
    """Repos as local directories (`<root>/<type>/<repo>@<revision>`); `snapshot_download` copies the files its
    patterns select (huggingface_hub's own filter) into the HF cache layout and records each call."""

    def __init__(self, root: Path, cache: Path):
        self.root, self.cache, self.calls = root, cache, []

    def add(self, repo_id: str, source: Path, repo_type: str = "model", revision: str = "main") -> None:
        shutil.copytree(source, self.root / repo_type / f"{repo_id}@{revision}", dirs_exist_ok=True)

    def snapshot_download(self, repo_id, repo_type="model", revision=None, allow_patterns=None):
        from huggingface_hub.utils import filter_repo_objects

        self.calls.append((repo_id, repo_type, revision, tuple(allow_patterns) if allow_patterns else None))
        source = self.root / repo_type / f"{repo_id}@{revision or 'main'}"
        files = [str(p.relative_to(source)) for p in source.rglob("*") if p.is_file()]
        staged = self.root / "staging" / repo_type / repo_id
        for name in filter_repo_objects(files, allow_patterns=allow_patterns):
            (staged / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source / name, staged / name)
        return str(hub.install_repo(self.cache, repo_id, staged, repo_type=repo_type, revision=revision or "main"))


def test_prefetch_fills_an_empty_cache_with_exactly_what_offline_loading_reads(tmp_path, monkeypatch):
    import datasets
    import huggingface_hub.constants as hub_constants
    import numpy as np
    import pandas as pd
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from featsim.saes import SAESpec, load_sae, sae_info
    from featsim.tokens import DataConfig, hf_documents

    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets_cache")
    stand_in = StandInHub(tmp_path / "hub", cache)

    docs = hub.corpus_documents(20)
    tokenizer = hub.train_bpe_tokenizer(docs, vocab_size=300)
    checkpoint = hub.build_neox(tmp_path / "lm", tokenizer, hidden=16, layers=2, heads=2, seed=0)
    (checkpoint / "pytorch_model.bin").write_bytes(b"a duplicate of the weights that prefetch skips")
    stand_in.add("EleutherAI/pythia-14m", checkpoint)
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(200, 16))
    for layer in (0, 1):
        hub.write_sparsify(tmp_path / "sparsify" / f"layers.{layer}", hub.pca_sae(rows, 4), k=4)
    stand_in.add("someone/sae-pythia-14m", tmp_path / "sparsify")
    hub.write_sae_lens_pre6(tmp_path / "jb" / "blocks.1", hub.pca_sae(rows, 4), "blocks.1.hook_resid_post", 1, "p")
    hub.write_sae_lens_pre6(tmp_path / "jb" / "blocks.0", hub.pca_sae(rows, 4), "blocks.0.hook_resid_post", 0, "p")
    stand_in.add("someone/res-jb", tmp_path / "jb")
    for shard in range(3):
        path = tmp_path / "data" / "plain_text" / "partial-train" / f"{shard:04d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"text": docs[shard::3]}).to_parquet(path)
    stand_in.add("someone/webtext", tmp_path / "data", "dataset", "refs/convert/parquet")

    config = {
        "data": {"source": "hf", "hf": {"path": "someone/webtext", "revision": "refs/convert/parquet",
                                        "data_files": "plain_text/partial-train/0000.parquet"}},
        "models": {"A": {"lm": {"source": "hf", "name": "pythia-14m"}, "layers": [1],
                         "sae": {"source": "sparsify", "repo": "someone/sae-pythia-14m", "hookpoint": "layers.{layer}"}},
                   "B": {"lm_from": "A", "layers": [1],
                         "sae": {"source": "sae_lens", "release": "someone/res-jb", "id": "blocks.{layer}"}}},
    }
    prefetch(config, download=stand_in.snapshot_download)
    assert stand_in.calls == [
        ("someone/webtext", "dataset", "refs/convert/parquet", ("plain_text/partial-train/0000.parquet", "README.md")),
        ("EleutherAI/pythia-14m", "model", None, LM_FILES),
        ("someone/sae-pythia-14m", "model", None, ("layers.1/cfg.json", "layers.1/sae.safetensors", "config.json")),
        ("someone/res-jb", "model", None, ("blocks.1", "blocks.1/*")),
    ]
    cached = {str(p.relative_to(cache)).split("/", 3)[-1] for p in cache.rglob("*") if p.is_symlink()}
    assert "pytorch_model.bin" not in cached and "model.safetensors" in cached
    assert "layers.0/cfg.json" not in cached and "blocks.0/cfg.json" not in cached
    assert "plain_text/partial-train/0001.parquet" not in cached

    # offline (conftest sets HF_HUB_OFFLINE=1): what the jobs read comes from the cache
    assert AutoConfig.from_pretrained("EleutherAI/pythia-14m").hidden_size == 16
    assert AutoTokenizer.from_pretrained("EleutherAI/pythia-14m").get_vocab() == tokenizer.get_vocab()
    AutoModelForCausalLM.from_pretrained("EleutherAI/pythia-14m")
    for model in ("A", "B"):
        spec = SAESpec.from_config(model, config["models"][model]["sae"])
        assert sae_info(spec, 1, tmp_path).hook_name == "blocks.1.hook_resid_post"
        load_sae(spec, 1, tmp_path)
    data = DataConfig.from_config({**config["data"], "context_length": 8, "n_tokens": 64})
    assert list(hf_documents(data, tmp_path)) == docs[0::3]


def test_cli_prefetch_dry_run_lists_the_plan(capsys):
    from featsim.cli import main

    assert main(["prefetch", "--dry-run", str(REPO / "configs" / "pythia-70m-vs-160m.yaml")]) == 0
    out = capsys.readouterr().out
    assert "dataset Skylion007/openwebtext@refs/convert/parquet" in out and "EleutherAI/sae-pythia-160m-32k" in out
