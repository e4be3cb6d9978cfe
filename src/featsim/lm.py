"""Language-model loaders (a registry by `lm.source`) and the hook-capturing forward pass.

Every loader returns a transformer-lens model (HookedTransformer, or a TransformerBridge in compatibility
mode) whose hook names are TransformerLens's (`blocks.L.hook_resid_post`, ...). Weights are loaded
*without* transformer-lens's weight processing, as sae-lens does when it trains SAEs
(`from_pretrained_no_processing` + the SAE's own `model_from_pretrained_kwargs`), so hook activations are
the raw model's (equal to Hugging Face `hidden_states` for the residual stream).

- `hf`: an official transformer-lens name; needs internet or a populated HF cache (works with HF_HUB_OFFLINE=1).
- `local`: a Hugging Face checkpoint directory, loaded offline by `TransformerBridge.boot_transformers`;
  with `lm.architecture` (an official name with the same architecture and sizes) it is converted into a
  HookedTransformer instead, which needs that official name's config in the HF cache.
- `toy`: a toy checkpoint trained by this workflow (`results/{exp}/toy/lm/{model}`).
"""

from __future__ import annotations

import difflib
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from featsim.errors import ConfigError
from featsim.layout import TOY_LM, in_experiment

log = logging.getLogger(__name__)

# transformer-lens weight-processing switches an SAE may have been trained with (sae-lens metadata
# `model_from_pretrained_kwargs`); all off means raw activations.
PROCESSING_KEYS = ("fold_ln", "center_writing_weights", "center_unembed", "fold_value_biases",
                   "refactor_factored_attn_matrices")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class LMSpec:
    """One model entry's LM (config `models.<m>.lm`) and where to run it."""

    model: str  # the model entry that owns the LM (for error keys and toy paths)
    source: str  # hf | local | toy
    name: str | None = None
    path: str | None = None
    architecture: str | None = None
    dtype: str = "float32"
    device: str = "auto"

    def key(self, field: str | None = None) -> str:
        return f"models.{self.model}.lm" + (f".{field}" if field else "")

    @classmethod
    def from_config(cls, model: str, lm: dict, dtype: str = "float32", device: str = "auto") -> "LMSpec":
        spec = cls(model=model, source=lm.get("source"), name=lm.get("name"), path=lm.get("path"),
                   architecture=lm.get("architecture"), dtype=dtype, device=device)
        if spec.source not in LM_LOADERS:
            raise ConfigError(spec.key("source"), f"{spec.source!r} is not one of {sorted(LM_LOADERS)}")
        if dtype not in DTYPES:
            raise ConfigError(f"models.{model}.dtype", f"{dtype!r} is not one of {sorted(DTYPES)}")
        return spec

    def describe(self) -> dict:
        """Identifiers recorded in provenance."""
        return {"lm_source": self.source, "lm_name": self.name, "lm_path": self.path,
                "lm_architecture": self.architecture}


def resolve_device(device: str) -> str:
    """`auto` -> cuda when available, else cpu."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def official_model_name(name: str | None, key: str) -> str:
    """transformer-lens's official name (a Hugging Face repo id) for a name or alias."""
    from transformer_lens.loading_from_pretrained import OFFICIAL_MODEL_NAMES, get_official_model_name

    if not name:
        raise ConfigError(key, "required when the LM source is hf")
    try:
        return get_official_model_name(name)
    except ValueError as exc:
        close = difflib.get_close_matches(name, OFFICIAL_MODEL_NAMES, n=3)
        raise ConfigError(key, f"{name!r} is not a transformer-lens model name" + (f" (did you mean {close}?)" if close
                               else "") + "; use lm.source: local with lm.path for other checkpoints") from exc


def processing_kwargs(kwargs: dict | None, key: str) -> dict[str, bool]:
    """The weight-processing switches turned on in an SAE's `model_from_pretrained_kwargs` ({} = raw weights).

    Switches left off are dropped (off is the no-processing default), so `{"center_writing_weights": False}`
    and `{}` compare equal; other kwargs (devices, dtypes) are not about the activations and are ignored.
    """
    kwargs = dict(kwargs or {})
    unknown = sorted(set(kwargs) - set(PROCESSING_KEYS))
    if unknown:
        log.info("%s: ignoring model_from_pretrained_kwargs %s (not weight processing)", key, unknown)
    return {k: True for k, v in kwargs.items() if k in PROCESSING_KEYS and v}


@dataclass(frozen=True)
class LoadContext:
    """What a loader needs besides the spec: results dir of the experiment and weight processing."""

    exp_dir: Path
    processing: dict  # PROCESSING_KEYS -> bool, from the SAEs' metadata

    @property
    def no_processing(self) -> bool:
        return not any(self.processing.values())


def _quiet(fn: Callable, *args: Any, **kwargs: Any):
    """Call a transformer-lens constructor without its 3.9 deprecation warnings."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        return fn(*args, **kwargs)


def load_hf_lm(spec: LMSpec, ctx: LoadContext):
    """An official transformer-lens model, unprocessed unless the SAEs ask for processing."""
    from transformer_lens import HookedTransformer

    name = official_model_name(spec.name, spec.key("name"))
    try:
        return _quiet(HookedTransformer.from_pretrained_no_processing, name, device=resolve_device(spec.device),
                      dtype=DTYPES[spec.dtype], **ctx.processing)
    except OSError as exc:
        raise ConfigError(spec.key("name"), f"cannot load {name}: {exc}. Offline, the HF cache (HF_HOME) must hold "
                                            "the model; or point lm.source: local at a checkpoint directory") from exc


def load_local_lm(spec: LMSpec, ctx: LoadContext):
    """A Hugging Face checkpoint directory: TransformerBridge (offline), or HookedTransformer via `architecture`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(spec.path or "")
    if not spec.path or not (path / "config.json").exists():
        raise ConfigError(spec.key("path"), f"{spec.path!r} is not a Hugging Face checkpoint directory (no config.json)")
    device, dtype = resolve_device(spec.device), DTYPES[spec.dtype]
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    if spec.architecture:
        from transformer_lens import HookedTransformer

        official = official_model_name(spec.architecture, spec.key("architecture"))
        hf_model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype)
        try:
            return _quiet(HookedTransformer.from_pretrained_no_processing, official, hf_model=hf_model,
                          tokenizer=tokenizer, device=device, dtype=dtype, **ctx.processing)
        except OSError as exc:
            raise ConfigError(spec.key("architecture"), f"converting {path} as {official} needs {official}'s config "
                                                        f"(internet or HF cache): {exc}; or drop lm.architecture") from exc
    from transformer_lens.model_bridge import TransformerBridge

    bridge = _quiet(TransformerBridge.boot_transformers, str(path), device=device, dtype=dtype, tokenizer=tokenizer)
    if ctx.no_processing:
        bridge.enable_compatibility_mode(disable_warnings=True, no_processing=True)
    else:
        switches = {k: ctx.processing.get(k, False) for k in PROCESSING_KEYS}
        bridge.enable_compatibility_mode(disable_warnings=True, **switches)
    return bridge


def load_toy_lm(spec: LMSpec, ctx: LoadContext):
    """A toy LM trained by this workflow (featsim.layout.TOY_LM)."""
    from featsim.toy.lm import load_toy_lm as load_checkpoint

    if not ctx.no_processing:
        raise ConfigError(f"models.{spec.model}.sae", f"toy LMs are used unprocessed, but the SAE asks for {ctx.processing}")
    return load_checkpoint(in_experiment(ctx.exp_dir, TOY_LM, model=spec.model), device=resolve_device(spec.device),
                           dtype=spec.dtype)


LM_LOADERS: dict[str, Callable[[LMSpec, LoadContext], Any]] = {
    "hf": load_hf_lm,
    "local": load_local_lm,
    "toy": load_toy_lm,
}


def activations_lm(acts, device: str = "auto") -> LMSpec:
    """The LM that wrote an activation store (from the attrs `featsim.targets.activations.make_activations`
    records), to run on `device`."""
    from featsim.stores import rebuild_advice  # zarr: only when an activation store is read

    attrs = acts.attrs
    missing = [key for key in ("lm_owner", "lm_source", "lm_dtype") if key not in attrs]
    if missing:
        raise ValueError(f"activation store {acts.path} does not record its LM ({missing}); "
                         f"{rebuild_advice(acts.path)}")
    return LMSpec(model=attrs["lm_owner"], source=attrs["lm_source"], name=attrs.get("lm_name"),
                  path=attrs.get("lm_path"), architecture=attrs.get("lm_architecture"), dtype=attrs["lm_dtype"],
                  device=device)


def load_lm(spec: LMSpec, exp_dir: str | Path, processing: dict | None = None):
    """Load the LM of `spec` in eval mode with the loader registered for its source."""
    model = LM_LOADERS[spec.source](spec, LoadContext(Path(exp_dir), dict(processing or {})))
    model.eval()
    if getattr(model, "tokenizer", None) is not None:
        # featsim's rows are right-padded; a left padding side would make transformer-lens build its own mask
        model.tokenizer.padding_side = "right"
    return model


# ---------------------------------------------------------------- forward with hooks


class _AllHooksCaptured(Exception):
    """Raised by the last requested hook to skip the rest of the forward pass."""


def capture_hooks(model, tokens: torch.Tensor, hook_names: list[str],
                  select: Callable[[torch.Tensor], torch.Tensor]) -> dict[str, torch.Tensor]:
    """One forward pass; returns `select(activation)` for each hook (trailing dims flattened to one).

    The pass stops as soon as every requested hook has fired: like `run_with_cache(names_filter=hooks,
    stop_at_layer=last + 1)`, but it also skips the final norm and unembedding of a bridge-wrapped model,
    whose `stop_at_layer` runs the whole HF forward when the last block is requested.
    """
    wanted = list(dict.fromkeys(hook_names))
    captured: dict[str, torch.Tensor] = {}

    def save(activation: torch.Tensor, hook, name: str) -> None:
        batch, positions = activation.shape[:2]
        captured[name] = select(activation.reshape(batch, positions, -1))
        if len(captured) == len(wanted):
            raise _AllHooksCaptured

    hooks = [(name, lambda act, hook, name=name: save(act, hook, name)) for name in wanted]
    with torch.no_grad(), model.hooks(fwd_hooks=hooks):
        try:
            model(tokens, return_type=None)
        except _AllHooksCaptured:
            pass
    missing = [name for name in wanted if name not in captured]
    if missing:
        raise RuntimeError(f"hooks {missing} did not fire in the forward pass of {type(model).__name__}")
    return captured


def block_index(hook_name: str) -> int | None:
    """The block of a `blocks.L.*` hook name (None for hooks outside blocks)."""
    parts = hook_name.split(".")
    if len(parts) > 2 and parts[0] == "blocks" and parts[1].isdigit():
        return int(parts[1])
    return None
