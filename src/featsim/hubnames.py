"""Offline check of the hub names an experiment uses, before any job: transformer-lens model names and
sae-lens releases/SAE ids (both libraries ship their registries, so a typo is caught without network).

Hub repos outside the registries (a sae-lens release given as "owner/name", sparsify repos, datasets) can
only be checked by the hub itself, so they pass here; `featsim prefetch` is where they are fetched.
Cost: transformer-lens's name list is read from its data file (no torch import); sae-lens's registry is
read through sae-lens (its import takes seconds), and only for configs with `sae.source: sae_lens`.
"""

from __future__ import annotations

import difflib
import importlib.util
from functools import cache
from pathlib import Path

from featsim.errors import ConfigError


@cache
def transformer_lens_names() -> dict[str, str]:
    """transformer-lens's official model names and aliases (lower case) -> official name.

    Read from `transformer_lens/supported_models.py` (plain data) without importing transformer_lens,
    which imports torch; the same map `get_official_model_name` builds.
    """
    package = importlib.util.find_spec("transformer_lens")
    if package is None or not package.submodule_search_locations:
        raise ModuleNotFoundError("transformer_lens is not installed")
    path = Path(list(package.submodule_search_locations)[0]) / "supported_models.py"
    spec = importlib.util.spec_from_file_location("featsim._transformer_lens_supported_models", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    names = {}
    for official in module.OFFICIAL_MODEL_NAMES:
        for alias in module.MODEL_ALIASES.get(official, []):
            names[alias.lower()] = official
        names[official.lower()] = official
    return names


def _lm_problems(model: str, lm: dict) -> list[ConfigError]:
    field = {"hf": "name", "local": "architecture"}.get(lm.get("source"))
    if field is None or (field == "architecture" and not lm.get("architecture")):
        return []
    key, name = f"models.{model}.lm.{field}", lm.get(field)
    if not name:
        return [ConfigError(key, "required when the LM source is hf")]
    names = transformer_lens_names()
    if name.lower() in names:
        return []
    official = sorted(set(names.values()))
    close = difflib.get_close_matches(name, official, n=3)
    return [ConfigError(key, f"{name!r} is not a transformer-lens model name" + (f" (did you mean {close}?)" if close
                             else "") + "; use lm.source: local with lm.path for other checkpoints")]


def _sae_problems(model: str, entry: dict) -> list[ConfigError]:
    sae = entry.get("sae") or {}
    if sae.get("source") != "sae_lens":
        return []
    from featsim.saes import SAESpec, registry_problems

    try:
        return registry_problems(SAESpec.from_config(model, sae), [int(layer) for layer in entry.get("layers", [])])
    except ConfigError as exc:  # an id template that cannot be filled
        return [exc]


def hub_name_problems(config: dict) -> list[ConfigError]:
    """Every unknown transformer-lens model name or sae-lens release/id, as errors naming the config key."""
    problems: list[ConfigError] = []
    for model, entry in (config.get("models") or {}).items():
        if "lm" in entry:
            problems += _lm_problems(model, entry["lm"])
        problems += _sae_problems(model, entry)
    return problems


def check_hub_names(config: dict) -> list[str]:
    """One message per unknown transformer-lens model name or sae-lens release/id, naming its config key."""
    return [str(problem) for problem in hub_name_problems(config)]
