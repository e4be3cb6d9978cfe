"""LLM activations at the hooks the SAEs were trained on: one forward pass per batch for all layers of a model.

The activations of a model entry are computed once and shared by every entry that reuses them
(`lm_from` with `share_activations`, default true): the layers written are the union of their layers,
and each layer's hook is the one named in the SAEs' own metadata (`sae.cfg.metadata.hook_name`, shifted
only under `legacy.layer_offset`). An entry of the MLP-neuron baseline (`sae.source: neurons`, hook
`blocks.L.mlp.hook_post`) never shares with an SAE entry or the other way round: hooks and widths differ,
so it runs its own forward pass. Only unmasked token positions are written, in row-major order of
tokens.zarr (the ROW CONVENTION of featsim.stores). Memory is bounded by one batch of rows.
The Snakefile imports this module when it plans jobs, so torch and the model libraries are imported
inside the functions that run models.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm.auto import tqdm

from featsim.errors import ConfigError
from featsim.tokens import load_tokenizer, vocab_compatible

if TYPE_CHECKING:
    from featsim.lm import LMSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LayerPlan:
    """What one layer's activation store holds: the LM hook read and the SAE width it must match."""

    layer: int
    hook: str  # the LM hook read (the SAE's own hook unless legacy.layer_offset)
    sae_hook: str  # the hook in the SAE's metadata
    d_in: int
    users: tuple[str, ...]  # model entries whose SAE of this layer reads these activations
    key: str  # config key that picks the first user's SAE (for errors)


def plan_layers(users: dict[str, dict], legacy_layer_offset: bool, exp_dir: str | Path,
                lm: LMSpec | None = None) -> tuple[dict[int, LayerPlan], dict[str, bool]]:
    """Per layer, the hook all sharing entries' SAEs agree on; and the LM weight processing they need.

    `users` maps model entry -> {"sae": sae config, "layers": [...]} for every entry reading these activations;
    `lm` is the LM they share (needed by the neurons source, whose sizes are the LM's).
    """
    from featsim.lm import processing_kwargs
    from featsim.saes import SAESpec, lm_hook, sae_info

    plans: dict[int, LayerPlan] = {}
    processing: dict[str, bool] | None = None
    processing_from = ""
    for model, entry in users.items():
        spec = SAESpec.from_config(model, entry["sae"], lm=lm)
        for layer in entry["layers"]:
            info = sae_info(spec, int(layer), exp_dir)
            hook = lm_hook(spec, info.hook_name, legacy_layer_offset)
            wanted = processing_kwargs(info.processing, spec.locator_key)
            if processing is None:
                processing, processing_from = wanted, spec.locator_key
            elif wanted != processing:
                raise ConfigError(spec.locator_key, f"this SAE was trained on an LM with weight processing {wanted}, "
                                                    f"but {processing_from} on {processing}; one forward pass cannot serve "
                                                    "both (split them into model entries without lm_from sharing)")
            plan = plans.get(int(layer))
            if plan is None:
                plans[int(layer)] = LayerPlan(int(layer), hook, info.hook_name, info.d_in, (model,), spec.locator_key)
            elif (plan.hook, plan.d_in) != (hook, info.d_in):
                raise ConfigError(f"models.{model}.share_activations",
                                  f"the SAE of '{model}' at layer {layer} reads {hook} (d_in {info.d_in}) but that of "
                                  f"'{plan.users[0]}' reads {plan.hook} (d_in {plan.d_in}); set share_activations: "
                                  "false so each entry gets its own activations")
            else:
                plans[int(layer)] = LayerPlan(plan.layer, plan.hook, plan.sae_hook, plan.d_in,
                                              plan.users + (model,), plan.key)
    return dict(sorted(plans.items())), processing or {}


def check_model_fits(lm, plans: dict[int, LayerPlan], tokens, model: str, lm_key: str) -> None:
    """Stop early, naming the config key, when the LM cannot serve these layers, hooks or tokens."""
    from featsim.lm import block_index

    n_layers = int(lm.cfg.n_layers)
    for plan in plans.values():
        if not 0 <= plan.layer < n_layers:
            raise ConfigError(f"models.{model}.layers", f"layer {plan.layer} is out of range: the LM has {n_layers} "
                                                        f"layers (0..{n_layers - 1})")
        block = block_index(plan.hook)
        if plan.hook not in lm.hook_dict or (block is not None and block >= n_layers):
            raise ConfigError(plan.key, f"the SAE of layer {plan.layer} reads hook {plan.hook}, which this "
                                        f"{n_layers}-layer LM does not have")
    if tokens.context_length > int(lm.cfg.n_ctx):
        raise ConfigError("data.context_length", f"{tokens.context_length} exceeds the context of the LM of "
                                                 f"'{model}' ({lm.cfg.n_ctx})")
    max_id = max((int(block.max()) for _, block, _ in tokens.iter_batches(8192)), default=0)
    if max_id >= int(lm.cfg.d_vocab):
        raise ConfigError(lm_key, f"token id {max_id} is outside the LM's vocabulary ({lm.cfg.d_vocab}): the tokens "
                                  "were made with another tokenizer")
    if getattr(lm, "tokenizer", None) is not None:
        reference = load_tokenizer(tokens.attrs["tokenizer"]).get_vocab()
        if not vocab_compatible(reference, lm.tokenizer.get_vocab()):
            raise ConfigError(lm_key, f"the tokenizer of the LM of '{model}' differs from the experiment tokenizer "
                                      f"{tokens.attrs['tokenizer']}; all models must share one tokenizer")


def device_of(lm):
    return next(lm.parameters()).device


def write_activations(lm, tokens, plans: dict[int, LayerPlan], out_paths: dict[int, str | Path], batch_size: int,
                      attrs: dict) -> dict:
    """Run `tokens` through `lm` in batches and append each layer's unmasked rows to its store."""
    import torch

    from featsim.lm import capture_hooks
    from featsim.stores import ActsWriter

    device = device_of(lm)
    hooks = list(dict.fromkeys(plan.hook for plan in plans.values()))
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        writers = {layer: stack.enter_context(ActsWriter(out_paths[layer], plan.d_in, "float32",
                                                         {**attrs, "layer": layer, "hook": plan.hook,
                                                          "sae_hook": plan.sae_hook, "users": list(plan.users)}))
                   for layer, plan in plans.items()}
        bar = tqdm(total=tokens.n_sequences * tokens.context_length, desc="LM forward", unit="tok", file=sys.stderr,
                   mininterval=5.0)
        for _, token_block, mask_block in tokens.iter_batches(batch_size):
            token_ids = torch.as_tensor(token_block, dtype=torch.long, device=device)  # [batch, ctx]
            keep = torch.as_tensor(mask_block, dtype=torch.bool, device=device)  # [batch, ctx]
            captured = capture_hooks(lm, token_ids, hooks, lambda act: act[keep].float().cpu())
            for layer, plan in plans.items():
                rows = captured[plan.hook]  # [n_unmasked, width]
                if rows.shape[1] != plan.d_in:
                    raise ConfigError(plan.key, f"the SAE of layer {layer} expects d_in={plan.d_in} at {plan.hook}, "
                                                f"but that hook is {rows.shape[1]} wide in this LM")
                writers[layer].append(rows.numpy())
            bar.update(token_ids.numel())
        bar.close()
    seconds = time.perf_counter() - started
    n_positions = tokens.n_sequences * tokens.context_length
    stats = {"seconds": seconds, "positions": n_positions, "rows": tokens.n_unmasked,
             "tokens_per_s": n_positions / max(seconds, 1e-9)}
    log.info("LM forward: %d positions (%d kept) in %.1f s = %.0f tokens/s, %d layers in one pass",
             n_positions, tokens.n_unmasked, seconds, stats["tokens_per_s"], len(plans))
    return stats


# ---------------------------------------------------------------- which entry computes whose activations


def reads_neurons(entry: dict) -> bool:
    """Whether a model entry is the MLP-neuron baseline (its activations are MLP hidden units)."""
    return entry["sae"].get("source") == "neurons"


def activation_owner(config: dict, model: str) -> str:
    """The model entry whose activation stores `model` reads: its `lm_from` entry when it shares them.

    Sharing needs `share_activations` (default true) and the same kind of activation: an MLP-neuron
    entry (sae.source: neurons) and an SAE entry never share, whatever share_activations says.
    """
    entry = config["models"][model]
    source = entry.get("lm_from")
    if not source or not entry.get("share_activations", True):
        return model
    return source if reads_neurons(entry) == reads_neurons(config["models"][source]) else model


def activation_owners(config: dict) -> list[str]:
    """Model entries that run an LM forward pass (one activations job each)."""
    return sorted({activation_owner(config, model) for model in config["models"]})


def activation_users(config: dict, owner: str) -> dict[str, dict]:
    """Entries reading `owner`'s activations (owner first) -> {"sae": ..., "layers": [...]}."""
    names = [owner] + [m for m in config["models"] if m != owner and activation_owner(config, m) == owner]
    return {m: {"sae": config["models"][m]["sae"], "layers": list(config["models"][m]["layers"])}
            for m in names if activation_owner(config, m) == owner}


def activation_layers(config: dict, owner: str) -> list[int]:
    """Layers written by `owner`'s activations job: the union over the entries that read them."""
    return sorted({int(layer) for entry in activation_users(config, owner).values() for layer in entry["layers"]})
