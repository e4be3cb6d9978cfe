"""Start-up checks: everything knowable about a validated config before any job runs.

`featsim validate` and the Snakefile run the same `preflight`, so a typo in a file path, a concept file,
a layer index or a token budget stops the run before Snakemake deletes or silently keeps an output.
Each check is a function `(config, root) -> Iterable[Finding]`, listed in `PREFLIGHT_CHECKS`; `root` is
a `Roots`: the directory relative paths in the config are read from (Snakemake's working directory) and
the workflow directory (the fallback for the shipped concept lists). The Snakefile runs them at every
start, so they import nothing heavy (no torch, no scipy; sae-lens's registry only for configs that name
sae-lens releases).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

from featsim import tokenstores
from featsim.concepts import ConceptFileError, concept_paths, concept_root, load_concepts
from featsim.config import comparison_layers, read_config_file, validate_config
from featsim.errors import ConfigError
from featsim.filters import load_junk_tokens
from featsim.hubnames import hub_name_problems
from featsim.pairing import PairingVariant
from featsim.steering_config import SteeringConfig
from featsim.tokens import DataConfig


@dataclass(frozen=True)
class Finding:
    """One problem found before any job: `key` is the config key (or file) to fix."""

    key: str
    message: str
    severity: str = "error"  # error | warning

    def __str__(self) -> str:
        return f"{self.severity}: config key '{self.key}': {self.message}"


class PreflightError(ConfigError):
    """One or more start-up checks failed; the message lists every error found."""

    def __init__(self, findings: list[Finding]):
        self.findings = findings
        self.key = findings[0].key
        lines = "\n".join(f"  - {finding}" for finding in findings)
        ValueError.__init__(self, f"{len(findings)} problem(s) found before any job ran:\n{lines}")


@dataclass(frozen=True)
class Roots:
    """Where a config's relative paths are read from."""

    workdir: Path  # Snakemake's working directory (junk files, local data, local checkpoints)
    workflow_dir: Path | None = None  # concept patterns that match nothing in workdir are read from here


def _from_error(error: Exception, key: str) -> Finding:
    if isinstance(error, ConfigError):
        return Finding(error.key, str(error).removeprefix(f"config key '{error.key}': "))
    return Finding(key, str(error))


def check_data(config: dict, root: Roots) -> Iterator[Finding]:
    """The token budget and packing settings, as the tokens job will read them."""
    try:
        DataConfig.from_config(config["data"], config.get("legacy"))
    except ConfigError as error:
        yield _from_error(error, "data")


def check_concepts(config: dict, root: Roots) -> Iterator[Finding]:
    """Every concept file: it exists, parses and is well formed; every glob matches a file."""
    patterns = (config.get("semantic") or {}).get("concepts") or []
    try:
        load_concepts(patterns, concept_root(patterns, root.workdir, root.workflow_dir))
    except ConceptFileError as error:
        yield Finding("semantic.concepts", str(error))


def check_pairings(config: dict, root: Roots) -> Iterator[Finding]:
    """Every pairing variant builds, and a junk list given as a file exists and parses."""
    for name, entry in config["pairings"].items():
        key = f"pairings.{name}"
        try:
            PairingVariant.from_config(entry, key)
            load_junk_tokens(entry.get("junk_tokens"), key=f"{key}.junk_tokens", root=root.workdir)
        except (ConfigError, ValueError) as error:
            yield _from_error(error, key)


def _cached_hf_config(name: str) -> dict | None:
    """A hub model's config.json from the local Hugging Face cache, or None when it is not cached."""
    if "/" not in name:
        return None
    from huggingface_hub import try_to_load_from_cache

    path = try_to_load_from_cache(name, "config.json")
    if not isinstance(path, (str, os.PathLike)):
        return None
    return json.loads(Path(path).read_text())


def _first(mapping: dict, *names: str) -> int | None:
    return next((int(mapping[name]) for name in names if isinstance(mapping.get(name), int)), None)


@dataclass(frozen=True)
class KnownShape:
    """What the config or a cached checkpoint says about an LM before it is loaded."""

    n_layers: int | None
    n_ctx: int | None
    source: str  # where the numbers come from, for messages


def known_shape(lm: dict, root: Roots) -> KnownShape | None:
    """Depth and context of an LM entry from its toy settings or a config.json available offline."""
    if lm["source"] == "toy":
        toy = lm.get("toy") or {}
        return KnownShape(toy.get("n_layers"), toy.get("n_ctx"), "its toy settings")
    if lm["source"] == "hf":
        hf = _cached_hf_config(lm["name"])
        source = f"{lm['name']}'s config.json in the Hugging Face cache"
    else:
        path = Path(lm.get("path", ""))
        path = path if path.is_absolute() else root.workdir / path
        hf = json.loads((path / "config.json").read_text()) if (path / "config.json").is_file() else None
        source = f"{path / 'config.json'}"
    if hf is None:
        return None
    return KnownShape(_first(hf, "num_hidden_layers", "n_layer", "num_layers", "n_layers"),
                      _first(hf, "max_position_embeddings", "n_positions", "n_ctx"), source)


def check_model_shapes(config: dict, root: Roots) -> Iterator[Finding]:
    """Layers within each LM's depth and rows within its context, where the depth is known offline."""
    models = config["models"]
    context_length = int(config["data"]["context_length"])
    for name, entry in models.items():
        owner = entry.get("lm_from") or name
        shape = known_shape(models[owner]["lm"], root)
        if shape is None:
            continue
        if shape.n_layers is not None:
            beyond = [layer for layer in entry["layers"] if not 0 <= layer < shape.n_layers]
            if beyond:
                yield Finding(f"models.{name}.layers", f"layers {beyond} do not exist: model '{owner}' has "
                                                       f"{shape.n_layers} blocks (0..{shape.n_layers - 1}), "
                                                       f"per {shape.source}")
        if shape.n_ctx is not None and context_length > shape.n_ctx and name == owner:
            yield Finding("data.context_length", f"{context_length} is longer than model '{name}' can read "
                                                 f"({shape.n_ctx} positions, per {shape.source}); lower it")


def check_comparisons(config: dict, root: Roots) -> Iterator[Finding]:
    """A comparison of a model entry with itself measures nothing but the method's noise floor."""
    for name, comparison in config["comparisons"].items():
        if comparison["a"] == comparison["b"]:
            yield Finding(f"comparisons.{name}", f"compares model entry '{comparison['a']}' with itself; every "
                                                 "pair is a latent with itself. For a same-model ceiling, add "
                                                 "an entry with `lm_from` and another SAE seed", "warning")


def check_hub_registries(config: dict, root: Roots) -> Iterator[Finding]:
    """Transformer-lens model names and sae-lens releases/ids, against the registries those libraries ship."""
    for error in hub_name_problems(config):
        yield _from_error(error, "models")


def check_steering(config: dict, root: Roots) -> Iterator[Finding]:
    """The `steering` slice: its settings, and the comparisons, concepts and layer cells it names."""
    steering = config.get("steering") or {}
    try:
        SteeringConfig.from_config({key: value for key, value in steering.items() if key != "comparisons"})
    except ConfigError as error:
        yield _from_error(error, "steering")
    comparisons = steering.get("comparisons") or []
    unknown = [cmp for cmp in comparisons if cmp not in config["comparisons"]]
    if unknown:
        yield Finding("steering.comparisons", f"{unknown} are not comparisons (have {sorted(config['comparisons'])})")
    if not comparisons:
        return
    patterns = (config.get("semantic") or {}).get("concepts") or []
    try:
        concept_ids = set(concept_paths(patterns, concept_root(patterns, root.workdir, root.workflow_dir)))
    except ConceptFileError:
        return  # check_concepts reports it
    if not concept_ids:
        yield Finding("steering.comparisons", "steering needs concepts: set semantic.concepts")
    missing = [c for c in steering.get("concepts") or [] if c not in concept_ids]
    if missing:
        yield Finding("steering.concepts", f"{missing} are not semantic concepts (have {sorted(concept_ids)})")
    for cmp in comparisons:
        if cmp in unknown:
            continue
        cells = {(la, lb) for la in comparison_layers(config, cmp, "a") for lb in comparison_layers(config, cmp, "b")}
        outside = [cell for cell in steering.get("layer_pairs") or [] if tuple(cell) not in cells]
        if outside:
            yield Finding("steering.layer_pairs", f"{outside} are not layer cells of comparison '{cmp}'")


def check_tokenizers(config: dict, root: Roots) -> Iterator[Finding]:
    """Same tokenizer, or alignment declared: a comparison whose sides read different token stores (or whose
    toy tokenizers certainly differ) must declare `align`; steering needs one token set (no aligned sides).

    Hub and local tokenizers that differ by name may still share a vocabulary (Pythia sizes do), so for them
    the check is made on the vocabularies when the experiment store is built (featsim.tokens)."""
    for cmp, key_a, key_b in tokenstores.unaligned_cross_store_comparisons(config):
        yield Finding(f"comparisons.{cmp}", f"compares models with different tokenizers ({key_a} and {key_b}) that "
                                            "read different token stores; declare `align: word` (or token) on it to "
                                            "correlate on character-aligned positions")
    stores = tokenstores.token_store_names(config)
    reported = {cmp for cmp, _, _ in tokenstores.unaligned_cross_store_comparisons(config)}
    for cmp, entry in config["comparisons"].items():
        keys = {tokenstores.tokenizer_key(config, entry[side]) for side in ("a", "b")}
        toy_only = all(key.startswith("toy-") for key in keys)
        if cmp not in reported and len(keys) > 1 and toy_only and not tokenstores.align_mode(config, cmp):
            yield Finding(f"comparisons.{cmp}", f"compares toy models with different tokenizers "
                                                f"({' and '.join(sorted(keys))}); declare `align: word` (or token) on it")
        elif tokenstores.align_mode(config, cmp) and stores[entry["a"]] == stores[entry["b"]]:
            yield Finding(f"comparisons.{cmp}.align", "both sides read the same token store (one tokenizer): "
                                                      "there is nothing to align, positions are shared", "warning")
    for model, store in stores.items():
        if store == tokenstores.EXPERIMENT_STORE and tokenstores.tokenizer_key(config, model).startswith("toy-bpe"):
            yield Finding(f"models.{tokenstores.lm_owner(config, model)}.lm.toy.tokenizer",
                          f"model '{model}' has a bpe tokenizer of its own, so it needs its own token store: make it a "
                          "side of a comparison with a word-level model that declares `align`")
    for cmp in (config.get("steering") or {}).get("comparisons") or []:
        if cmp in config["comparisons"] and tokenstores.comparison_alignment(config, cmp) is not None:
            yield Finding("steering.comparisons", f"comparison '{cmp}' aligns two tokenizers; steering carries vectors "
                                                  "between models on one token set, so it cannot steer it")


PREFLIGHT_CHECKS: tuple[Callable[[dict, Roots], Iterable[Finding]], ...] = (
    check_data,
    check_concepts,
    check_pairings,
    check_model_shapes,
    check_comparisons,
    check_tokenizers,
    check_hub_registries,
    check_steering,
)


def preflight(config: dict, workdir: str | Path | None = None,
              workflow_dir: str | Path | None = None) -> list[Finding]:
    """Every finding of every check on a validated config (errors and warnings)."""
    root = Roots(Path(workdir) if workdir is not None else Path.cwd(),
                 Path(workflow_dir) if workflow_dir is not None else None)
    return [finding for check in PREFLIGHT_CHECKS for finding in check(config, root)]


def require_preflight(config: dict, workdir: str | Path | None = None, warn: Callable[[str], None] = print,
                      workflow_dir: str | Path | None = None) -> None:
    """Raise PreflightError listing every error; pass each warning to `warn`."""
    findings = preflight(config, workdir, workflow_dir)
    for finding in findings:
        if finding.severity == "warning":
            warn(str(finding))
    errors = [finding for finding in findings if finding.severity == "error"]
    if errors:
        raise PreflightError(errors)


def check_workflow_config(config: dict, config_files: Iterable[str | Path], schema: dict,
                          workflow_dir: str | Path, warn: Callable[[str], None] = print) -> dict:
    """What the Snakefile runs before planning: each config file parsed strictly (a section written twice
    is an error: Snakemake's YAML reader would keep the last), the schema with defaults, then preflight."""
    for path in config_files:
        read_config_file(path)
    validate_config(config, schema)
    require_preflight(config, Path.cwd(), warn, workflow_dir)
    return config
