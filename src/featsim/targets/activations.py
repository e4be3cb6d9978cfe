"""Targets of the model rules: activation stores of one LM pass (every layer a model entry's readers need), and
an SAE's sparse codes, decoder and quality; provenance in the store attrs and meta.json."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any, Mapping

from featsim.activations import check_model_fits, device_of, plan_layers, write_activations
from featsim.errors import ConfigError
from featsim.lm import LMSpec, activations_lm, load_lm, resolve_device
from featsim.provenance import make_provenance, save_npy, write_json
from featsim.saes import ACTIVATION_MODES, SAESpec, fvu_gate, lm_hook, load_sae, write_codes_from_acts
from featsim.stores import open_acts, open_tokens


def make_activations(tokens_path: str | Path, out_paths: dict[int, str | Path], model: str, lm_owner: str,
                     lm: dict, users: dict[str, dict], legacy: dict | None, exp_dir: str | Path,
                     dtype: str = "float32", device: str = "auto", batch_size: int = 32,
                     ids: Mapping[str, Any] | None = None) -> dict:
    """The activations rule of one model entry: every layer in `out_paths` from one forward pass per batch.

    Each store's attrs carry the provenance of the config it depends on (LM, runtime, its readers, legacy)
    and `ids`.
    """
    legacy = dict(legacy or {})
    spec = LMSpec.from_config(lm_owner, lm, dtype=dtype, device=device)
    plans, processing = plan_layers(users, bool(legacy.get("layer_offset", False)), exp_dir, spec)
    missing = sorted(set(plans) ^ {int(k) for k in out_paths})
    if missing:
        raise ValueError(f"layers {missing} are not both planned and requested as outputs")
    tokens = open_tokens(tokens_path)
    language_model = load_lm(spec, exp_dir, processing)
    check_model_fits(language_model, plans, tokens, model, spec.key())
    config_slice = {"lm": lm, "runtime": {"dtype": dtype, "device": device, "batch_size": batch_size},
                    "users": users, "legacy": legacy}
    attrs = {**make_provenance(config_slice, **dict(ids or {})), "model": model, "lm_owner": lm_owner, **spec.describe(), "lm_dtype": dtype,
             "device": str(device_of(language_model)), "weight_processing": processing,
             "legacy_layer_offset": bool(legacy.get("layer_offset", False)),
             "tokens_vocab_hash": tokens.attrs.get("vocab_hash")}
    return write_activations(language_model, tokens, plans, {int(k): v for k, v in out_paths.items()},
                             int(batch_size), attrs)


def make_codes(acts_path: str | Path, model: str, layer: int, sae: dict, activation: str, legacy: dict,
               exp_dir: str | Path, out_codes: str | Path, out_decoder: str | Path, out_meta: str | Path,
               device: str = "auto", ids: Mapping[str, Any] | None = None) -> dict:
    """The `codes` rule: load the SAE, check it fits the stored activations, write codes, W_dec and meta.json.

    The codes store and meta.json carry the provenance of the SAE, activation and legacy config, and `ids`.

    For `sae.source: neurons` the LM whose W_out is the decoder is the one recorded in the activation
    store's attrs, so codes and decoder come from the same LM by construction.
    """
    if activation not in ACTIVATION_MODES:
        raise ConfigError(f"models.{model}.activation", f"{activation!r} is not one of {ACTIVATION_MODES}")
    provenance = make_provenance({"sae": sae, "activation": activation, "legacy": legacy}, **dict(ids or {}))
    legacy = dict(legacy or {})
    acts = open_acts(acts_path)
    device = resolve_device(device)
    neurons = sae.get("source") == "neurons"
    spec = SAESpec.from_config(model, sae, lm=activations_lm(acts, device) if neurons else None)
    if neurons and activation != "code":
        raise ConfigError(f"models.{model}.activation", f"{activation!r} is an SAE-encoder quantity; MLP neurons "
                                                        "(sae.source: neurons) have no encoder: use code")
    sae_model, info = load_sae(spec, layer, exp_dir, device)
    hook = lm_hook(spec, info.hook_name, bool(legacy.get("layer_offset", False)))
    if acts.attrs.get("hook") != hook:
        raise ConfigError(spec.locator_key, f"the SAE of model '{model}' layer {layer} reads {hook}, but {acts_path} "
                                            f"holds {acts.attrs.get('hook')}; if these activations are shared "
                                            f"through lm_from, set models.{model}.share_activations: false")
    if info.d_in != acts.d_model:
        raise ConfigError(spec.locator_key, f"the SAE expects d_in={info.d_in} at {hook}, the activations are "
                                            f"{acts.d_model} wide")
    enforce = not (legacy.get("layer_offset") or legacy.get("keep_special_tokens"))
    described = {"model": model, "layer": int(layer), "hook": hook, "sae_hook": info.hook_name, "d_in": info.d_in,
                 "d_sae": info.d_sae, "architecture": info.architecture, "sae_source": spec.source, **info.ids,
                 "activation": activation, "acts_store": str(acts_path), "tokens_vocab_hash": acts.attrs.get("tokens_vocab_hash")}
    attrs = {**provenance, **described, "lm_dtype": acts.attrs.get("lm_dtype")}  # named if codes are not finite
    quality = write_codes_from_acts(acts, sae_model, activation, out_codes, attrs,
                                    check=fvu_gate(spec, layer, hook, enforce))
    save_npy(out_decoder, sae_model.W_dec.detach().float().cpu().numpy())  # [d_sae, d_model]
    meta = {**described, "quality": asdict(quality), "max_fvu": spec.max_fvu,
            "sae_metadata": {"model_name": info.model_name, "context_size": info.context_size,
                             "prepend_bos": info.prepend_bos, "dataset_path": info.dataset_path,
                             "model_from_pretrained_kwargs": info.processing},
            "provenance": provenance}
    write_json(out_meta, meta)
    return meta
