"""SAE loaders (a registry by `sae.source`), hook metadata, and the codes stage (sparse codes + quality).

Sources (all return sae-lens `SAE` objects, so encode/decode/hook metadata are sae-lens's):
- `sae_lens`: `SAE.from_pretrained(release, id)`; `release` is a registered sae-lens release or a hub repo
  holding sae-lens folders (both work offline from the HF cache).
- `sparsify`: an EleutherAI sparsify/sae checkpoint (`cfg.json` + `sae.safetensors` per hookpoint folder,
  `layers.L` = output of block L = TL `blocks.L.hook_resid_post`), read with sae-lens's sparsify converter
  plus two corrections it needs for real checkpoints (see `sparsify_folder_loader`). `repo` is a hub repo
  id or a local directory holding the hookpoint folders.
- `local`: a sae-lens `save_model` directory (`path` template); `toy`: the same format, trained here.
- `neurons`: no SAE: the LLM-neuron baseline. Layer L's MLP hidden units (TL hook `blocks.L.mlp.hook_post`,
  the input of W_out) are the "latents", the code is their activation (identity encode/decode, FVU 0) and
  the decoder rows are the rows of `blocks[L].mlp.W_out` [d_mlp, d_model], each neuron's write direction
  into the residual stream (reference-method.md §2.2). It needs the model entry's LM (`SAESpec.lm`).

Codes: `activation: code` writes `sae.encode(x)` (the SAE's real TopK/JumpReLU/ReLU output);
`activation: pre` writes the encoder pre-activations ReLU(W_enc(x - b_dec) + b_enc), the dense code the
original study correlated for its Pythia SAEs (reference-method.md §2.3). Quality (FVU, L0, dead latents)
always comes from the real code.
"""

from __future__ import annotations

import difflib
import json
import logging
import re
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import scipy.sparse as sp
import torch
from safetensors import safe_open
from tqdm.auto import tqdm

from featsim.errors import ConfigError
from featsim.layout import TOY_LM, TOY_SAE, in_experiment
from featsim.lm import LMSpec, load_lm, official_model_name

log = logging.getLogger(__name__)

ACTIVATION_MODES = ("code", "pre")
SPARSIFY_CFG, SPARSIFY_WEIGHTS = "cfg.json", "sae.safetensors"
DEFAULT_MAX_FVU = 1.0
DENSE_CODE_BUDGET = 2**25  # floats of dense code held at once while encoding (128 MB at fp32)


# ---------------------------------------------------------------- config


@dataclass(frozen=True)
class SAESpec:
    """One model entry's SAEs (config `models.<m>.sae`); id/hookpoint/path are templates with {layer}.

    `lm` is the entry's LM (its own or its lm_from entry's), needed only by the `neurons` source.
    """

    model: str
    source: str  # sae_lens | sparsify | local | toy | neurons
    release: str | None = None
    id: str | None = None
    repo: str | None = None
    hookpoint: str = "layers.{layer}"
    path: str | None = None
    max_fvu: float | None = DEFAULT_MAX_FVU
    lm: LMSpec | None = None

    def key(self, field: str | None = None) -> str:
        return f"models.{self.model}.sae" + (f".{field}" if field else "")

    @property
    def locator_key(self) -> str:
        """The config key that picks the SAE of a layer (named in errors about a wrong SAE)."""
        return self.key({"sae_lens": "id", "sparsify": "hookpoint", "local": "path", "toy": "toy",
                         "neurons": "source"}[self.source])

    def fill(self, field: str, layer: int) -> str:
        """A template field with {layer} filled in."""
        template = getattr(self, field)
        if not template:
            raise ConfigError(self.key(field), f"required when {self.key('source')} is {self.source}")
        try:
            return template.format(layer=layer)
        except (KeyError, IndexError) as exc:
            raise ConfigError(self.key(field), f"template {template!r} may only use {{layer}}") from exc

    @classmethod
    def from_config(cls, model: str, sae: dict, lm: LMSpec | None = None) -> "SAESpec":
        spec = cls(model=model, source=sae.get("source"), release=sae.get("release"), id=sae.get("id"),
                   repo=sae.get("repo"), hookpoint=sae.get("hookpoint", "layers.{layer}"), path=sae.get("path"),
                   max_fvu=sae.get("max_fvu", DEFAULT_MAX_FVU), lm=lm)
        if spec.source not in SAE_SOURCES:
            raise ConfigError(spec.key("source"), f"{spec.source!r} is not one of {sorted(SAE_SOURCES)}")
        return spec


@dataclass(frozen=True)
class SAEInfo:
    """What the SAE's own metadata says about the activation it was trained on."""

    hook_name: str
    d_in: int
    d_sae: int
    architecture: str
    ids: dict  # release/id, repo/hookpoint or path: provenance
    model_name: str | None = None  # the LM the SAE was trained on, per its metadata
    processing: dict | None = None  # transformer-lens weight processing it was trained with
    context_size: int | None = None
    prepend_bos: bool | None = None
    dataset_path: str | None = None

    @classmethod
    def from_config(cls, cfg, ids: dict, key: str) -> "SAEInfo":
        """From a sae-lens SAEConfig (of a loaded SAE or a config-only read)."""
        meta = cfg.metadata
        if not meta.hook_name:
            raise ConfigError(key, f"SAE {ids} records no hook_name; featsim feeds each SAE the activation named "
                                   "in its own metadata and cannot guess it")
        if meta.hook_head_index is not None:
            raise ConfigError(key, f"SAE {ids} reads one attention head (hook_head_index); not supported")
        return cls(hook_name=meta.hook_name, d_in=int(cfg.d_in), d_sae=int(cfg.d_sae), architecture=cfg.architecture(),
                   ids=ids, model_name=meta.model_name, processing=dict(meta.model_from_pretrained_kwargs or {}),
                   context_size=meta.context_size, prepend_bos=meta.prepend_bos, dataset_path=meta.dataset_path)


# ---------------------------------------------------------------- sources


def _sae_config(cfg_dict: dict, defaulted: bool = False):
    """A sae-lens SAEConfig from a config dict as a loader returns it.

    Raw dicts (read from a cfg.json, or a converter's output) get sae-lens's `handle_config_defaulting`,
    which turns pre-6.0 layouts into the 6.x one; dicts it already went through (`defaulted`, e.g. from
    `load_sae_config_from_huggingface`) must not get it twice: the second pass finds no sae_lens_version
    and rebuilds `metadata` from top-level keys, losing hook_name, model_name and context_size.
    """
    from sae_lens import SAEConfig
    from sae_lens.loading.pretrained_sae_loaders import handle_config_defaulting

    cfg_dict = dict(cfg_dict)
    return SAEConfig.from_dict(cfg_dict if defaulted else handle_config_defaulting(cfg_dict))


@dataclass(frozen=True)
class SAESource:
    """How one source finds an SAE: its ids, its config (cheap) and the SAE itself.

    `layer_offset_applies`: whether `legacy.layer_offset` shifts the hook it reads (SAEs: yes; the
    neuron baseline reads its own block's MLP, as the study's neuron baseline did).
    """

    ids: Callable[[SAESpec, int, Path], dict]
    config: Callable[[SAESpec, int, Path], Any]  # -> sae-lens SAEConfig (or NeuronsConfig)
    load: Callable[[SAESpec, int, Path, str], Any]  # -> sae-lens SAE (or MLPNeurons), float32
    layer_offset_applies: bool = True


def _sae_lens_ids(spec: SAESpec, layer: int, exp_dir: Path) -> dict:
    if not spec.release:
        raise ConfigError(spec.key("release"), "required when the SAE source is sae_lens")
    return {"release": spec.release, "id": spec.fill("id", layer)}


HUB_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # "owner/name", as sae-lens accepts unregistered releases


def registry_problems(spec: SAESpec, layers: list[int]) -> list[ConfigError]:
    """What the sae-lens registry (offline, in the package) says is wrong with a sae_lens entry's release/ids.

    A registered release must know every layer's id; an unregistered release must be a hub repo id
    ("owner/name"), which sae-lens loads as a plain repo and only the hub can check.
    """
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    if not spec.release:
        return [ConfigError(spec.key("release"), "required when the SAE source is sae_lens")]
    directory = get_pretrained_saes_directory()
    lookup = directory.get(spec.release)
    if lookup is None:
        if HUB_REPO_ID.match(spec.release):
            return []
        close = difflib.get_close_matches(spec.release, list(directory), n=3)
        return [ConfigError(spec.key("release"), f"{spec.release!r} is neither a sae-lens release nor a hub repo id "
                                                 "(owner/name)" + (f"; did you mean {close}?" if close else ""))]
    problems = []
    for layer in layers:
        sae_id = spec.fill("id", layer)
        if sae_id not in lookup.saes_map:
            close = difflib.get_close_matches(sae_id, list(lookup.saes_map), n=3)
            problems.append(ConfigError(spec.key("id"), f"{sae_id!r} (layer {layer}) is not an SAE of release "
                                                        f"{spec.release!r}" + (f"; did you mean {close}?" if close else "")))
    return problems


def _check_registered_id(spec: SAESpec, layer: int) -> None:
    """Stop on a release/id the sae-lens registry rejects (offline check, before any download)."""
    problems = registry_problems(spec, [layer])
    if problems:
        raise problems[0]


def _hub_failure(spec: SAESpec, ids: dict, exc: Exception) -> ConfigError:
    return ConfigError(spec.key("id"), f"cannot fetch SAE {ids}: {exc}. Check the id; offline, the HF cache must "
                                       "hold it (or use sae.source: local)")


def _sae_lens_config(spec: SAESpec, layer: int, exp_dir: Path):
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError
    from sae_lens.loading.pretrained_sae_loaders import load_sae_config_from_huggingface

    ids = _sae_lens_ids(spec, layer, exp_dir)
    _check_registered_id(spec, layer)
    try:
        return _sae_config(load_sae_config_from_huggingface(ids["release"], ids["id"], device="cpu"), defaulted=True)
    except (EntryNotFoundError, LocalEntryNotFoundError, OSError) as exc:
        raise _hub_failure(spec, ids, exc) from exc


def _sae_lens_load(spec: SAESpec, layer: int, exp_dir: Path, device: str):
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError
    from sae_lens import SAE

    ids = _sae_lens_ids(spec, layer, exp_dir)
    _check_registered_id(spec, layer)
    try:
        return SAE.from_pretrained(ids["release"], ids["id"], device=device, dtype="float32")
    except (EntryNotFoundError, LocalEntryNotFoundError, OSError) as exc:
        raise _hub_failure(spec, ids, exc) from exc


def sparsify_folder_loader(path: str | Path, device: str = "cpu", cfg_overrides: dict | None = None):
    """sae-lens's `sparsify_disk_loader`, corrected for checkpoints as sparsify writes them.

    sparsify (and the older EleutherAI `sae`) always subtracts b_dec before encoding and stores
    W_dec as [num_latents, d_in]; sae-lens 6.54 sets `apply_b_dec_to_input = not normalize_decoder`
    (False for the default normalize_decoder=True, silently changing the codes) and transposes W_dec
    (a shape error on load). Here the input bias is always applied and W_dec is taken as stored.
    """
    from sae_lens.loading.pretrained_sae_loaders import sparsify_disk_loader

    path = Path(path)
    raw_cfg = json.loads((path / SPARSIFY_CFG).read_text())
    unsupported = {k: raw_cfg[k] for k in ("transcode", "skip_connection", "signed") if raw_cfg.get(k)}
    if raw_cfg.get("activation", "topk") != "topk":
        unsupported["activation"] = raw_cfg["activation"]
    if unsupported:
        raise ValueError(f"sparsify checkpoint {path} uses {unsupported}, which sae-lens's TopK SAE cannot reproduce")
    cfg_dict, state = sparsify_disk_loader(path, device=device, cfg_overrides=cfg_overrides)
    cfg_dict["apply_b_dec_to_input"] = True
    with safe_open(str(path / SPARSIFY_WEIGHTS), framework="pt", device=str(device)) as handle:
        if "W_dec" in handle.keys():
            W_dec = handle.get_tensor("W_dec")  # [num_latents, d_in]
        else:
            W_dec = handle.get_tensor("decoder.weight").T  # nn.Linear(num_latents -> d_in).weight is [d_in, num_latents]
    state["W_dec"] = W_dec.to(state["W_enc"].dtype).contiguous()
    return cfg_dict, state


def _sparsify_folder(spec: SAESpec, layer: int, files: tuple[str, ...]) -> Path:
    """The hookpoint folder of a layer: inside a local `repo` directory, or fetched from the hub."""
    hookpoint = spec.fill("hookpoint", layer)
    if not spec.repo:
        raise ConfigError(spec.key("repo"), "required when the SAE source is sparsify")
    local_root = Path(spec.repo).expanduser()
    if local_root.is_dir():
        folder = local_root / hookpoint
        if not (folder / SPARSIFY_CFG).exists():
            raise ConfigError(spec.key("hookpoint"), f"{folder} holds no sparsify {SPARSIFY_CFG}")
        return folder
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    try:
        fetched = [Path(hf_hub_download(spec.repo, f"{hookpoint}/{name}")) for name in files]
    except (EntryNotFoundError, LocalEntryNotFoundError, OSError) as exc:
        raise ConfigError(spec.key("hookpoint"), f"cannot fetch {spec.repo}/{hookpoint}: {exc}. Check repo and "
                                                 "hookpoint; offline, the HF cache must hold them") from exc
    return fetched[0].parent


def _sparsify_ids(spec: SAESpec, layer: int, exp_dir: Path) -> dict:
    return {"repo": spec.repo, "hookpoint": spec.fill("hookpoint", layer)}


def _sparsify_config(spec: SAESpec, layer: int, exp_dir: Path):
    from sae_lens.loading.pretrained_sae_loaders import get_sparsify_config_from_disk

    folder = _sparsify_folder(spec, layer, (SPARSIFY_CFG,))
    cfg_dict = get_sparsify_config_from_disk(folder, device="cpu")
    cfg_dict["apply_b_dec_to_input"] = True
    return _sae_config(cfg_dict)


def _sparsify_load(spec: SAESpec, layer: int, exp_dir: Path, device: str):
    from sae_lens import SAE

    folder = _sparsify_folder(spec, layer, (SPARSIFY_CFG, SPARSIFY_WEIGHTS))
    return SAE.load_from_disk(folder, device=device, dtype="float32", converter=sparsify_folder_loader)


def _disk_folder(spec: SAESpec, layer: int, exp_dir: Path) -> Path:
    if spec.source == "toy":
        folder = in_experiment(exp_dir, TOY_SAE, model=spec.model, layer=layer)
        if not (folder / "cfg.json").exists():
            raise FileNotFoundError(f"toy SAE {folder} is missing; build its toy SAE target first")
        return folder
    folder = Path(spec.fill("path", layer)).expanduser()
    if not (folder / "cfg.json").exists():
        raise ConfigError(spec.key("path"), f"{folder} is not a sae-lens SAE directory (no cfg.json)")
    return folder


def _disk_ids(spec: SAESpec, layer: int, exp_dir: Path) -> dict:
    return {"path": str(_disk_folder(spec, layer, exp_dir))}


def _disk_config(spec: SAESpec, layer: int, exp_dir: Path):
    from sae_lens.loading.pretrained_sae_loaders import get_sae_lens_config_from_disk

    return _sae_config(get_sae_lens_config_from_disk(_disk_folder(spec, layer, exp_dir), device="cpu"))


def _disk_load(spec: SAESpec, layer: int, exp_dir: Path, device: str):
    from sae_lens import SAE

    return SAE.load_from_disk(_disk_folder(spec, layer, exp_dir), device=device, dtype="float32")


# ---------------------------------------------------------------- the LLM-neuron baseline

NEURON_HOOK = "blocks.{layer}.mlp.hook_post"  # MLP hidden activation after the nonlinearity, the input of W_out


@dataclass(frozen=True)
class NeuronsMetadata:
    """The metadata fields featsim reads from a sae-lens SAE config, for MLP neurons (raw LM weights)."""

    hook_name: str
    model_name: str | None
    hook_head_index: None = None
    model_from_pretrained_kwargs: dict | None = None  # None: raw weights, no weight processing
    context_size: int | None = None
    prepend_bos: bool | None = None
    dataset_path: str | None = None


@dataclass(frozen=True)
class NeuronsConfig:
    """A sae-lens-like config of one layer's MLP neurons: d_in = d_sae = d_mlp."""

    d_in: int
    d_sae: int
    metadata: NeuronsMetadata

    def architecture(self) -> str:
        return "mlp_neurons"


class MLPNeurons(torch.nn.Module):
    """MLP neurons posing as an SAE: the code is the hidden activation itself (identity encode and decode,
    so FVU is 0), and `W_dec` holds the rows of W_out, the neurons' write directions."""

    def __init__(self, W_out: torch.Tensor, cfg: NeuronsConfig):
        super().__init__()
        self.register_buffer("W_dec", W_out)  # [d_mlp, d_model]
        self.cfg = cfg

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def decode(self, code: torch.Tensor) -> torch.Tensor:
        return code


@dataclass(frozen=True)
class LMShape:
    """The sizes of an LM that the neuron baseline needs, read from its config without loading weights."""

    d_model: int
    d_mlp: int | None
    n_layers: int


def _transformer_lens_shape(cfg: dict) -> LMShape:
    return LMShape(d_model=int(cfg["d_model"]), d_mlp=cfg.get("d_mlp"), n_layers=int(cfg["n_layers"]))


def lm_shape(lm: LMSpec, exp_dir: Path) -> LMShape:
    """d_model, d_mlp and n_layers of an LM from its config alone, as the loader of `lm.source` will build it.

    toy: the checkpoint's config.json; hf (and local with `architecture`): transformer-lens's conversion of
    the official HF config; local: the mapping transformer-lens's TransformerBridge applies to config.json.
    """
    if lm.source == "toy":
        path = in_experiment(exp_dir, TOY_LM, model=lm.model) / "config.json"
        if not path.exists():
            raise FileNotFoundError(f"toy LM config {path} is missing; build its toy_lm target first")
        return _transformer_lens_shape(json.loads(path.read_text()))
    from transformer_lens.loading_from_pretrained import convert_hf_model_config

    if lm.source == "hf" or lm.architecture:
        key = lm.key("name" if lm.source == "hf" else "architecture")
        name = official_model_name(lm.name if lm.source == "hf" else lm.architecture, key)
        try:
            return _transformer_lens_shape(convert_hf_model_config(name))
        except OSError as exc:
            raise ConfigError(key, f"cannot read the config of {name}: {exc}. Offline, the HF cache must hold "
                                   "it") from exc
    from transformer_lens.model_bridge.sources.transformers import map_default_transformer_lens_config
    from transformers import AutoConfig

    path = Path(lm.path or "")
    if not lm.path or not (path / "config.json").exists():
        raise ConfigError(lm.key("path"), f"{lm.path!r} is not a Hugging Face checkpoint directory (no config.json)")
    cfg = map_default_transformer_lens_config(AutoConfig.from_pretrained(str(path)))
    return LMShape(d_model=int(cfg.d_model), d_mlp=getattr(cfg, "d_mlp", None), n_layers=int(cfg.n_layers))


def _neurons_lm(spec: SAESpec) -> LMSpec:
    if spec.lm is None:
        raise ValueError(f"{spec.key('source')} is neurons, but the SAESpec carries no LM; build it with "
                         "SAESpec.from_config(model, sae, lm=<the entry's LMSpec>)")
    return spec.lm


def _neurons_ids(spec: SAESpec, layer: int, exp_dir: Path) -> dict:
    lm = _neurons_lm(spec)
    return {"neurons": NEURON_HOOK.format(layer=layer), "lm_owner": lm.model, **lm.describe()}


def _neurons_config(spec: SAESpec, layer: int, exp_dir: Path) -> NeuronsConfig:
    lm = _neurons_lm(spec)
    shape = lm_shape(lm, exp_dir)
    if not 0 <= layer < shape.n_layers:
        raise ConfigError(f"models.{spec.model}.layers", f"layer {layer} is out of range: the LM of "
                                                         f"'{lm.model}' has {shape.n_layers} layers")
    if not shape.d_mlp:
        raise ConfigError(spec.key("source"), f"the LM of '{lm.model}' has no MLP layers (d_mlp is unset), so it "
                                              "has no MLP neurons to compare")
    d_mlp = int(shape.d_mlp)
    metadata = NeuronsMetadata(hook_name=NEURON_HOOK.format(layer=layer), model_name=lm.name or lm.path or lm.model)
    return NeuronsConfig(d_in=d_mlp, d_sae=d_mlp, metadata=metadata)


def _neurons_load(spec: SAESpec, layer: int, exp_dir: Path, device: str) -> MLPNeurons:
    """The neurons of one layer; the LM is loaded unprocessed (raw W_out) and only W_out is kept."""
    cfg = _neurons_config(spec, layer, exp_dir)
    language_model = load_lm(replace(_neurons_lm(spec), device=device), exp_dir)
    W_out = language_model.blocks[layer].mlp.W_out.detach().to(device=device, dtype=torch.float32).clone()
    if tuple(W_out.shape) != (cfg.d_sae, int(language_model.cfg.d_model)):
        raise ValueError(f"W_out of block {layer} is {tuple(W_out.shape)}, but the LM's config gives (d_mlp="
                         f"{cfg.d_sae}, d_model={language_model.cfg.d_model}): {spec.key('source')}: neurons does "
                         "not support this LM's MLP")
    return MLPNeurons(W_out.contiguous(), cfg)  # [d_mlp, d_model]


SAE_SOURCES: dict[str, SAESource] = {
    "sae_lens": SAESource(_sae_lens_ids, _sae_lens_config, _sae_lens_load),
    "sparsify": SAESource(_sparsify_ids, _sparsify_config, _sparsify_load),
    "local": SAESource(_disk_ids, _disk_config, _disk_load),
    "toy": SAESource(_disk_ids, _disk_config, _disk_load),
    "neurons": SAESource(_neurons_ids, _neurons_config, _neurons_load, layer_offset_applies=False),
}


def sae_info(spec: SAESpec, layer: int, exp_dir: str | Path) -> SAEInfo:
    """The SAE's hook and sizes from its config alone (no weights loaded)."""
    exp_dir = Path(exp_dir)
    source = SAE_SOURCES[spec.source]
    return SAEInfo.from_config(source.config(spec, layer, exp_dir), source.ids(spec, layer, exp_dir), spec.locator_key)


def load_sae(spec: SAESpec, layer: int, exp_dir: str | Path, device: str = "cpu"):
    """The SAE of one layer (float32, eval mode) and its info."""
    exp_dir = Path(exp_dir)
    source = SAE_SOURCES[spec.source]
    sae = source.load(spec, layer, exp_dir, device)
    sae.eval()
    return sae, SAEInfo.from_config(sae.cfg, source.ids(spec, layer, exp_dir), spec.locator_key)


# ---------------------------------------------------------------- encoding and quality


@dataclass(frozen=True)
class SAEQuality:
    """How well the SAE reconstructs our activations (from its real code)."""

    fvu: float  # sum ||x - x_hat||^2 / sum ||x - mean(x)||^2
    mean_l0: float  # active latents per token
    dead_fraction: float  # latents that never fire on our tokens
    n_tokens: int


class QualityAccumulator:
    """Streaming FVU / L0 / firing counts over activation chunks (float64 sums)."""

    def __init__(self, d_in: int, d_sae: int, device: str | torch.device):
        self.sum_x = torch.zeros(d_in, dtype=torch.float64, device=device)
        self.sum_sq_x = 0.0
        self.sum_sq_err = 0.0
        self.l0_total = 0
        self.fire_counts = torch.zeros(d_sae, dtype=torch.int64, device=device)
        self.n_tokens = 0

    def update(self, x: torch.Tensor, reconstruction: torch.Tensor, code: torch.Tensor) -> None:
        x64 = x.double()
        self.sum_x += x64.sum(0)
        self.sum_sq_x += float(x64.pow(2).sum())
        self.sum_sq_err += float((x64 - reconstruction.double()).pow(2).sum())
        active = code != 0
        self.l0_total += int(active.sum())
        self.fire_counts += active.sum(0)
        self.n_tokens += int(x.shape[0])

    def result(self) -> SAEQuality:
        if self.n_tokens == 0:
            raise ValueError("no activation rows to measure the SAE on (is every token masked?)")
        total_variance = self.sum_sq_x - float(self.sum_x.pow(2).sum()) / self.n_tokens
        return SAEQuality(fvu=self.sum_sq_err / total_variance if total_variance > 0 else float("inf"),
                          mean_l0=self.l0_total / self.n_tokens,
                          dead_fraction=float((self.fire_counts == 0).double().mean()),
                          n_tokens=self.n_tokens)


def encode(sae, x: torch.Tensor, activation: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(written values, real code, reconstruction) of activations x [n, d_in].

    `code`: the written values are `sae.encode(x)`; `pre`: ReLU of the encoder pre-activation
    (sae-lens's `hook_sae_acts_pre`, i.e. W_enc(x - b_dec) + b_enc for standard/TopK/JumpReLU SAEs).
    """
    if activation == "code":
        code = sae.encode(x)
        return code, code, sae.decode(code)
    captured: dict[str, torch.Tensor] = {}

    def keep_pre(pre: torch.Tensor, hook) -> None:
        captured["pre"] = pre

    with sae.hooks(fwd_hooks=[("hook_sae_acts_pre", keep_pre)]):
        code = sae.encode(x)
    return torch.relu(captured["pre"]), code, sae.decode(code)


def to_csr(values: torch.Tensor) -> sp.csr_matrix:
    """A dense [n, d] tensor (any device) as a scipy CSR matrix, without a dense host copy."""
    rows, cols = values.nonzero(as_tuple=True)  # row-major order: rows sorted, columns sorted within a row
    data = values[rows, cols].float().cpu().numpy()
    indptr = np.zeros(values.shape[0] + 1, dtype=np.int64)
    np.cumsum(torch.bincount(rows, minlength=values.shape[0]).cpu().numpy(), out=indptr[1:])
    return sp.csr_matrix((data, cols.to(torch.int32).cpu().numpy(), indptr), shape=tuple(values.shape))


def code_chunk_rows(d_sae: int) -> int:
    """Activation rows encoded at once so that the dense code stays within DENSE_CODE_BUDGET floats."""
    return int(max(1, min(8192, DENSE_CODE_BUDGET // max(1, d_sae))))


@torch.no_grad()
def write_codes_from_acts(acts, sae, activation: str, out_path: str | Path, attrs: dict,
                          check: Callable[[SAEQuality], None] | None = None) -> SAEQuality:
    """Encode an activation store chunk by chunk into a CSR code store; `check` may veto before commit."""
    from featsim.stores import CodesWriter

    if activation not in ACTIVATION_MODES:
        raise ValueError(f"activation must be one of {ACTIVATION_MODES}, got {activation!r}")
    device = sae.W_dec.device
    d_sae = int(sae.cfg.d_sae)
    quality = QualityAccumulator(int(sae.cfg.d_in), d_sae, device)
    started = time.perf_counter()
    with CodesWriter(out_path, d_sae, attrs) as writer:
        bar = tqdm(total=acts.n_tokens, desc=f"encoding {Path(out_path).name}", unit="tok", file=sys.stderr,
                   mininterval=5.0)
        for chunk in acts.iter_chunks(code_chunk_rows(d_sae)):
            x = torch.as_tensor(chunk, device=device, dtype=torch.float32)  # [n, d_in]
            written, code, reconstruction = encode(sae, x, activation)
            quality.update(x, reconstruction, code)
            writer.append(to_csr(written))
            bar.update(len(chunk))
        bar.close()
        result = quality.result()
        writer.attrs.update(asdict(result))
        if check is not None:
            check(result)
    seconds = time.perf_counter() - started
    log.info("encoded %d tokens in %.1f s (%.0f tokens/s): FVU %.4f, L0 %.1f, dead %.1f%%", result.n_tokens, seconds,
             result.n_tokens / max(seconds, 1e-9), result.fvu, result.mean_l0, 100 * result.dead_fraction)
    return result


def fvu_gate(spec: SAESpec, layer: int, hook: str, enforce: bool) -> Callable[[SAEQuality], None]:
    """Stop when the FVU shows the activations are not what the SAE was trained on (warn only if not `enforce`).

    FVU >= 1 means the reconstruction explains no more variance than the mean does, which no SAE fed the
    activation it was trained on does; a wrong hook, model or weight processing gives FVU near or above 1,
    hence the default limit 1.0 for SAEs of unknown quality. A wrong layer can stay well below it (toy
    TopK SAE: 0.06 at its own hook, 0.40 fed the previous block), so a known-good SAE deserves a tighter
    `max_fvu`. Above half the limit a warning is logged.
    """
    def check(quality: SAEQuality) -> None:
        limit = spec.max_fvu
        if limit is None or quality.fvu <= limit / 2:
            return
        message = (f"the SAE of model '{spec.model}' layer {layer} (hook {hook}) leaves FVU {quality.fvu:.3f} of our "
                   f"activations unexplained")
        if quality.fvu <= limit:
            log.warning("%s (above half of %s=%s)", message, spec.key("max_fvu"), limit)
        elif enforce:
            raise ConfigError(spec.key("max_fvu"), f"{message}, above the limit {limit}: these are probably not the "
                              f"activations it was trained on (wrong {spec.locator_key}, layer, model or weight "
                              "processing). Fix the config, or raise max_fvu if this SAE is just poor on this text")
        else:
            log.warning("%s, above %s=%s (kept: a legacy switch is on)", message, spec.key("max_fvu"), limit)

    return check


# ---------------------------------------------------------------- hook alignment


def feed_hook(sae_hook: str, legacy_layer_offset: bool) -> str:
    """The LM hook whose activations the SAE is fed: its own hook, or the study's off-by-one.

    `legacy.layer_offset` reproduces the study feeding the SAE of `blocks.L.hook_resid_post` the output of
    block L-1 (`hidden_states[L]`): `blocks.{L-1}.hook_resid_post`, and `blocks.0.hook_resid_pre` for L = 0.
    """
    if not legacy_layer_offset:
        return sae_hook
    parts = sae_hook.split(".")
    if len(parts) != 3 or parts[0] != "blocks" or not parts[1].isdigit() or parts[2] != "hook_resid_post":
        raise ConfigError("legacy.layer_offset", f"is defined for residual-stream SAEs (blocks.L.hook_resid_post), "
                                                 f"not for an SAE at {sae_hook}")
    block = int(parts[1])
    return f"blocks.{block - 1}.hook_resid_post" if block > 0 else "blocks.0.hook_resid_pre"


def lm_hook(spec: SAESpec, sae_hook: str, legacy_layer_offset: bool) -> str:
    """The LM hook an entry's codes are computed from: `feed_hook`, except for sources the offset skips."""
    return feed_hook(sae_hook, legacy_layer_offset and SAE_SOURCES[spec.source].layer_offset_applies)
