"""`featsim prefetch`: download into the Hugging Face cache everything a config reads from the hub, so the
workflow then runs with HF_HUB_OFFLINE=1 (compute nodes without internet).

What a config needs (`plan_prefetch`, offline): each hub LM's config, tokenizer and safetensors weights
(what transformers/transformer-lens read), a hub tokenizer named in `data.tokenizer`, each SAE's folder
(sae-lens: the registry's repo and folder per layer, or the hub repo/id; sparsify: the hookpoint files),
and the dataset files `data.hf.data_files` at `data.hf.revision`. `prefetch` fetches them with
huggingface_hub's `snapshot_download` (resumable; files already cached are not downloaded again).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from featsim.errors import ConfigError

log = logging.getLogger(__name__)

LM_FILES = ("*.json", "*.safetensors", "*.model", "*.txt", "tokenizer*")  # no .bin/.gguf/.h5 duplicates
TOKENIZER_FILES = ("*.json", "*.model", "*.txt", "tokenizer*")
SPARSIFY_FILES = ("cfg.json", "sae.safetensors")
SPARSIFY_REPO_FILES = ("config.json",)  # the training config sae-lens reads model/dataset/context from, if present


@dataclass(frozen=True)
class HubFetch:
    """One snapshot_download call: a repo at a revision, restricted to `allow_patterns` (None = all files)."""

    repo_id: str
    repo_type: str  # model | dataset
    revision: str | None
    allow_patterns: tuple[str, ...] | None
    key: str  # the config key that asks for it

    def kwargs(self) -> dict:
        return {"repo_id": self.repo_id, "repo_type": self.repo_type, "revision": self.revision,
                "allow_patterns": list(self.allow_patterns) if self.allow_patterns is not None else None}


def _lm_fetches(model: str, lm: dict) -> list[HubFetch]:
    from featsim.lm import official_model_name

    if lm.get("source") == "hf":
        name = official_model_name(lm.get("name"), f"models.{model}.lm.name")
        return [HubFetch(name, "model", None, LM_FILES, f"models.{model}.lm.name")]
    if lm.get("source") == "local" and lm.get("architecture"):  # HookedTransformer reads the official config
        name = official_model_name(lm["architecture"], f"models.{model}.lm.architecture")
        return [HubFetch(name, "model", None, ("config.json",), f"models.{model}.lm.architecture")]
    return []


def _sae_fetches(model: str, entry: dict) -> list[HubFetch]:
    from featsim.saes import SAESpec, registry_problems

    sae = entry["sae"]
    spec = SAESpec.from_config(model, sae)
    layers = [int(layer) for layer in entry["layers"]]
    if spec.source == "sae_lens":
        from sae_lens.loading.pretrained_saes_directory import get_repo_id_and_folder_name

        problems = registry_problems(spec, layers)
        if problems:
            raise problems[0]
        folders = [get_repo_id_and_folder_name(spec.release, spec.fill("id", layer)) for layer in layers]
        repo_id = folders[0][0]
        patterns = tuple(pattern for _, folder in folders for pattern in (folder, f"{folder}/*"))  # a file or a folder
        return [HubFetch(repo_id, "model", None, patterns, spec.key("id"))]
    if spec.source == "sparsify":
        if not spec.repo:
            raise ConfigError(spec.key("repo"), "required when the SAE source is sparsify")
        if Path(spec.repo).expanduser().is_dir():
            return []
        patterns = tuple(f"{spec.fill('hookpoint', layer)}/{name}" for layer in layers for name in SPARSIFY_FILES)
        patterns += SPARSIFY_REPO_FILES
        return [HubFetch(spec.repo, "model", None, patterns, spec.key("hookpoint"))]
    return []


def _data_fetches(data: dict) -> list[HubFetch]:
    fetches = []
    tokenizer = data.get("tokenizer")
    if tokenizer and not Path(str(tokenizer)).expanduser().exists():
        fetches.append(HubFetch(str(tokenizer), "model", None, TOKENIZER_FILES, "data.tokenizer"))
    if data.get("source") == "hf":
        hf = data.get("hf") or {}
        if Path(str(hf.get("path", ""))).expanduser().is_dir():
            return fetches
        files = hf.get("data_files")
        if not files:
            raise ConfigError("data.hf.data_files", "list the dataset files to read (e.g. the first parquet shards of "
                                                    "revision refs/convert/parquet) so that prefetch downloads a slice, "
                                                    "not the whole dataset")
        patterns = (files,) if isinstance(files, str) else tuple(files)
        fetches.append(HubFetch(str(hf["path"]), "dataset", hf.get("revision"), patterns + ("README.md",),
                                "data.hf.data_files"))
    return fetches


def plan_prefetch(config: dict) -> list[HubFetch]:
    """The downloads a validated config needs, one per repo (same repo and revision merged), in config order."""
    fetches = _data_fetches(config["data"])
    for model, entry in config["models"].items():
        if "lm" in entry:
            fetches += _lm_fetches(model, entry["lm"])
        fetches += _sae_fetches(model, entry)
    merged: dict[tuple, HubFetch] = {}
    for fetch in fetches:
        ident = (fetch.repo_id, fetch.repo_type, fetch.revision)
        if ident in merged and fetch.allow_patterns is not None and merged[ident].allow_patterns is not None:
            patterns = tuple(dict.fromkeys(merged[ident].allow_patterns + fetch.allow_patterns))
            fetch = HubFetch(fetch.repo_id, fetch.repo_type, fetch.revision, patterns, merged[ident].key)
        elif ident in merged:
            fetch = HubFetch(fetch.repo_id, fetch.repo_type, fetch.revision, None, merged[ident].key)
        merged[ident] = fetch
    return list(merged.values())


def prefetch(config: dict, download: Callable[..., str] | None = None) -> list[tuple[HubFetch, str]]:
    """Download every planned repo slice into the HF cache; returns (fetch, local snapshot path) pairs."""
    if download is None:
        from huggingface_hub import snapshot_download as download
    fetched = []
    for fetch in plan_prefetch(config):
        log.info("fetching %s %s@%s %s (%s)", fetch.repo_type, fetch.repo_id, fetch.revision or "main",
                 list(fetch.allow_patterns) if fetch.allow_patterns else "all files", fetch.key)
        fetched.append((fetch, download(**fetch.kwargs())))
    return fetched
