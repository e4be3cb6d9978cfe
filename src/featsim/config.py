"""Load and validate experiment configs: JSON-schema checks with defaults, then cross-key checks.

Every error names the offending key as a dotted path (e.g. `pairings.strict.strategy`) so a user can
find it in the YAML; nothing runs until the whole config is valid.
"""

from __future__ import annotations

import copy
import difflib
import importlib.resources
from pathlib import Path

import jsonschema
import yaml

from featsim.errors import ConfigError

SCHEMA = "schemas/config.schema.yaml"
"""The config JSON schema, package data of featsim (workflow/schemas/ links to it): the one owner of every
config key, its description and its default."""


def load_schema(path: str | Path | None = None) -> dict:
    """The config JSON schema: the one shipped inside the package, or the file at `path`."""
    if path is not None:
        if not Path(path).exists():
            raise FileNotFoundError(f"config schema not found at {path}")
        return yaml.safe_load(Path(path).read_text())
    return yaml.safe_load(importlib.resources.files("featsim").joinpath(SCHEMA).read_text())


def _with_defaults(validator_class):
    """A validator that fills `default` values of absent properties while it validates."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if "default" in subschema and name not in instance:
                    instance[name] = copy.deepcopy(subschema["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


_FillingValidator = _with_defaults(jsonschema.Draft202012Validator)


def _key(path) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


def _describe(error: jsonschema.ValidationError, schema: dict) -> ConfigError:
    path = list(error.absolute_path)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        unexpected = sorted((set(error.instance) - set(allowed)), key=str)
        key = _key(path + unexpected[:1])
        hint = ""
        if allowed and unexpected and isinstance(unexpected[0], str):
            close = difflib.get_close_matches(unexpected[0], allowed, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
        return ConfigError(key, f"unknown key (allowed here: {', '.join(allowed)}).{hint}")
    if error.validator == "enum":
        return ConfigError(_key(path), f"{error.instance!r} is not one of {error.validator_value}")
    if error.validator == "required":
        return ConfigError(_key(path), error.message)
    if error.validator == "oneOf" and isinstance(error.instance, dict) and "layers" in error.instance:
        return ConfigError(_key(path), "a model entry needs exactly one of 'lm' or 'lm_from'")
    if error.validator == "type":
        return ConfigError(_key(path), f"{error.instance!r} is not of type {error.validator_value}")
    return ConfigError(_key(path), error.message)


def validate_config(config: dict, schema: dict | None = None) -> dict:
    """Validate `config` in place (filling defaults) and return it; raise ConfigError naming the key."""
    schema = schema or load_schema()
    if None in config:  # YAML reads an unquoted `null:` key as None; the key is named "null"
        config["null"] = config.pop(None)
    errors = sorted(_FillingValidator(schema).iter_errors(config), key=lambda e: (len(e.absolute_path), e.path))
    if errors:
        raise _describe(errors[0], schema)
    _check_references(config)
    sort_keys_in_place(config)
    return config


def sort_keys_in_place(mapping: dict) -> None:
    """Put every mapping of the config in sorted key order, recursively (lists keep their order).

    Snakemake compares rule params by their repr, which follows dict order: with keys sorted, a config
    re-dumped by a YAML tool or an editor in another key order plans no re-run. Nothing in featsim may
    depend on the order keys were written in (a default that is "the first" entry is the first in
    sorted order).
    """
    items = sorted(mapping.items(), key=lambda item: str(item[0]))
    mapping.clear()
    for key, value in items:
        mapping[key] = _sorted_copy(value)


def _sorted_copy(value):
    if isinstance(value, dict):
        copy_ = dict(value)
        sort_keys_in_place(copy_)
        return copy_
    if isinstance(value, list):
        return [_sorted_copy(item) for item in value]
    return value


def _check_references(config: dict) -> None:
    """Checks JSON schema cannot express: names that must refer to other entries."""
    models = config["models"]
    for name, entry in models.items():
        source = entry.get("lm_from")
        if source is not None:
            if source not in models:
                raise ConfigError(f"models.{name}.lm_from", f"names no model entry (have: {', '.join(models)})")
            if "lm" not in models[source]:
                raise ConfigError(f"models.{name}.lm_from", f"model '{source}' has no 'lm' of its own to share")
        if config["data"]["source"] != "toy" and _lm_of(config, name).get("source") == "toy":
            raise ConfigError(f"models.{name}.lm.source", "a toy LM needs data.source: toy (it knows only the toy vocabulary)")
        if entry["sae"]["source"] == "toy" and _lm_of(config, name).get("source") != "toy":
            raise ConfigError(f"models.{name}.sae.source", "toy SAEs are trained on toy LMs only")
        _require_fields(entry["sae"], f"models.{name}.sae",
                        {"sae_lens": ("release", "id"), "sparsify": ("repo",), "local": ("path",)})
        if "lm" in entry:
            _require_fields(entry["lm"], f"models.{name}.lm", {"hf": ("name",), "local": ("path",)})
    for cmp_name, comparison in config["comparisons"].items():
        for side in ("a", "b"):
            model = comparison[side]
            if model not in models:
                raise ConfigError(f"comparisons.{cmp_name}.{side}", f"'{model}' is not a model entry (have: {', '.join(models)})")
            subset = comparison.get(f"layers_{side}")
            if subset:
                missing = sorted(set(subset) - set(models[model]["layers"]))
                if missing:
                    raise ConfigError(f"comparisons.{cmp_name}.layers_{side}",
                                      f"layers {missing} are not in models.{model}.layers")
        for other in comparison.get("contrast") or []:
            if other not in config["comparisons"] or other == cmp_name:
                raise ConfigError(f"comparisons.{cmp_name}.contrast", f"'{other}' is not another comparison "
                                  f"(have: {', '.join(c for c in config['comparisons'] if c != cmp_name)})")
    semantic = config.get("semantic", {})
    if semantic.get("pairing") is not None and semantic["pairing"] not in config["pairings"]:
        raise ConfigError("semantic.pairing", f"'{semantic['pairing']}' is not a pairing variant (have: {', '.join(config['pairings'])})")


def _require_fields(section: dict, key: str, needs: dict[str, tuple[str, ...]]) -> None:
    for field in needs.get(section["source"], ()):
        if field not in section:
            raise ConfigError(f"{key}.{field}", f"required when {key}.source is '{section['source']}'")


def _lm_of(config: dict, model: str) -> dict:
    entry = config["models"][model]
    return entry["lm"] if "lm" in entry else config["models"][entry["lm_from"]]["lm"]


def lm_owner(config: dict, model: str) -> str:
    """The model entry whose LM (and activations) `model` uses."""
    return config["models"][model].get("lm_from") or model


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe YAML loader that refuses a key written twice in one mapping (YAML would keep the last)."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise ConfigError(f"{key}", f"written twice in one section (lines {seen[key] + 1} and "
                                            f"{key_node.start_mark.line + 1} of {key_node.start_mark.name}); "
                                            "YAML would silently keep only the last: merge them")
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def read_config_file(path: str | Path) -> dict:
    """Parse a YAML config file (not yet validated); errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("<file>", f"{path} does not exist; give the path of a YAML config file")
    try:
        with path.open(encoding="utf-8") as handle:
            config = yaml.load(handle, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        raise ConfigError("<file>", f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(config, dict):
        raise ConfigError("<top level>", f"{path} must hold a mapping of config keys")
    return config


def load_config(path: str | Path) -> dict:
    """Read a YAML config file and validate it."""
    return validate_config(read_config_file(path))


def comparison_layers(config: dict, comparison: str, side: str) -> list[int]:
    """Layers of one side of a comparison (its subset, else all the model's layers)."""
    entry = config["comparisons"][comparison]
    return list(entry.get(f"layers_{side}") or config["models"][entry[side]]["layers"])


def semantic_pairing(config: dict) -> str:
    """The pairing variant used inside concepts and in the pair browser (`semantic.pairing`, else the
    first variant in sorted name order)."""
    return config["semantic"].get("pairing") or next(iter(config["pairings"]))


def semantic_metrics(config: dict) -> list[str]:
    """Metrics scored on concept subspaces."""
    return list(config["semantic"].get("metrics") or config["metrics"])
