"""Targets of the concept-subspace rules: concept members, concept pairs and scores of each layer cell, and the
membership accuracy against the toy ground truth, each with provenance. Correlation, code stores and scoring are
imported where they are used (import cost), so that the members and accuracy jobs do not import them."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping

import pandas as pd

from featsim.alignment import comparison_rows
from featsim.concepts import load_concept
from featsim.layout import cell_name
from featsim.multiple_testing import DEFAULT_ALPHA
from featsim.pairing import LABEL_COLUMNS_USED, PairingVariant
from featsim.parquet import read_parquet_provenance, write_parquet
from featsim.provenance import make_provenance, write_json
from featsim.semantic import (ConceptPairs, SemanticConfig, assignment_accuracy, concept_members, concept_pairs,
                              score_concept)
from featsim.split import load_split
from featsim.toy.corpus import read_categories


def write_members(labels_path, concept_path, out_path, min_examples: int, ids: Mapping[str, Any] | None = None,
                  min_fraction: float = 0.0) -> pd.DataFrame:
    """The `concept_members` target: one concept's latents of one SAE layer (provenance: `ids` and the concept)."""
    concept = load_concept(concept_path)
    labels_top_k = read_parquet_provenance(labels_path).get("top_k")
    if labels_top_k is not None:
        SemanticConfig(min_examples=min_examples).check_against_labels(int(labels_top_k))
    labels = pd.read_parquet(labels_path, columns=["latent", "top_words"])
    members, diagnostics = concept_members(labels, concept, min_examples, min_fraction)
    provenance = make_provenance({"min_examples": min_examples, "min_fraction": min_fraction,
                                  "concept": concept.record()},
                                 kind="concept_members", labels=str(labels_path),
                                 **{**(ids or {}), "concept": concept.id},
                                 labels_config_hash=read_parquet_provenance(labels_path).get("config_hash"),
                                 diagnostics=diagnostics)
    write_parquet(out_path, members, provenance)
    return members


def write_concept_pairs(codes_a_path, codes_b_path, members_a_path, members_b_path, out_path, variant_config: dict,
                        correlation_config: dict, min_latents: int, pairing: str, labels_a_path=None,
                        labels_b_path=None, ids: dict | None = None, split=None, rows=None) -> ConceptPairs:
    """The `concept_pairs` target: pairs inside one concept for one layer cell; status and reason in provenance.

    Correlates over `rows` when given (featsim.alignment.comparison_rows: aligned row pairs), else over the
    pairing rows of `split`."""
    from featsim.correlate import CorrelationConfig
    from featsim.stores import open_codes

    key = f"pairings.{pairing}"
    variant = PairingVariant.from_config(variant_config, key=key)
    correlation = CorrelationConfig.from_config(correlation_config)
    labels_a = pd.read_parquet(labels_a_path, columns=LABEL_COLUMNS_USED) if labels_a_path else None
    labels_b = pd.read_parquet(labels_b_path, columns=LABEL_COLUMNS_USED) if labels_b_path else None
    result = concept_pairs(open_codes(codes_a_path), open_codes(codes_b_path), pd.read_parquet(members_a_path),
                           pd.read_parquet(members_b_path), variant, top_k=correlation.top_k,
                           min_active=correlation.min_active, min_latents=min_latents, device=correlation.device,
                           block_latents=correlation.block_latents, labels_a=labels_a, labels_b=labels_b, key=key,
                           rows=rows if rows is not None else split.pair_selection if split is not None else None)
    provenance = make_provenance({"pairing": variant_config, "correlation": correlation_config,
                                  "min_latents": min_latents}, kind="concept_pairs", **(ids or {}),
                                 semantic=result.info, split=split.describe() if split is not None else None)
    write_parquet(out_path, result.table, provenance)
    return result


def read_concept_pairs(path) -> tuple[pd.DataFrame, dict]:
    """A `concept_pairs` target: the pairs table and its info (status, reason, latent counts, diagnostics)."""
    provenance = read_parquet_provenance(path)
    if "semantic" not in provenance:
        raise ValueError(f"{path} is not a concept_pairs file (no 'semantic' record); rebuild it")
    return pd.read_parquet(path), provenance["semantic"]


def write_concept_score(pairs_path, decoder_a_path, decoder_b_path, concept_path, json_path, null_path, metric: str,
                        null_config: dict, *, ids: Mapping[str, Any], options: dict | None = None,
                        threads: int | None = None, alpha: float | None = None) -> dict:
    """The `semantic_score` target: one metric on one concept's pairs, null at the same n (json + null.npy).

    `ids` (experiment, comparison, concept, pairing, layer_a, layer_b) seed the cell's permutations
    (`featsim.scoring.cell_seed`) and go into the provenance.
    """
    from featsim.scoring import NullConfig, cell_seed, load_decoder
    from featsim.targets.scoring import write_score

    alpha = DEFAULT_ALPHA if alpha is None else float(alpha)
    null_config = NullConfig.from_config(null_config)
    seed = cell_seed(null_config.seed, "semantic", ids["comparison"], ids["concept"], ids["pairing"],
                     cell_name(ids["layer_a"], ids["layer_b"]))
    table, info = read_concept_pairs(pairs_path)
    concept = load_concept(concept_path)
    record, null = score_concept(table, info, load_decoder(decoder_a_path), load_decoder(decoder_b_path), metric,
                                 int(null_config.permutations), seed, options, concept,
                                 device=null_config.device, precision=null_config.precision, threads=threads,
                                 sequential_h=null_config.sequential_h, alpha=alpha)
    record["base_seed"] = int(null_config.seed)
    record["provenance"] = make_provenance(
        {"null": asdict(null_config), "metric": metric, "metric_options": dict(options or {}),
         "concept": concept.record(), "alpha": alpha},
        kind="semantic_score", **ids, metric=metric, pairs_file=str(pairs_path))
    write_score(json_path, null_path, record, null)
    return record


def write_accuracy(labels_path, member_paths, concept_paths, corpus_dir, out_path, min_examples: int,
                   min_fraction: float, ids: dict | None = None) -> dict:
    """The `semantic_accuracy` target: membership precision/recall against the toy word -> category map."""
    concepts = {concept.id: concept for concept in map(load_concept, concept_paths)}
    members = {}
    for path in member_paths:
        concept_id = read_parquet_provenance(path).get("concept")
        if concept_id not in concepts:
            raise ValueError(f"members file {path} is of concept {concept_id!r}, which is not among the concept "
                             f"files {sorted(concepts)}; rebuild it with the concept_members rule")
        members[concept_id] = pd.read_parquet(path)
    categories = read_categories(corpus_dir)
    labels = pd.read_parquet(labels_path, columns=["latent", "top_words"])
    accuracy = assignment_accuracy(members, categories, labels, concepts, min_examples, min_fraction)
    provenance = make_provenance({"min_examples": min_examples, "truth_min_fraction": min_fraction,
                                  "concepts": [concepts[c].record() for c in sorted(members)]},
                                 kind="semantic_accuracy", **(ids or {}))
    result = {**accuracy, "provenance": provenance}
    write_json(out_path, result)
    return result


def write_members_layers(labels_paths, concept_path, out_paths, min_examples: int, model_layers,
                         ids: Mapping[str, Any], min_fraction: float = 0.0) -> list[pd.DataFrame]:
    """The `concept_members` rule: one concept's latents in every compared SAE layer (one job per concept);
    `model_layers` names the (model, layer) of each labels table."""
    return [write_members(labels, concept_path, out, min_examples, {**ids, "model": model, "layer": int(layer)},
                          min_fraction)
            for labels, out, (model, layer) in zip(labels_paths, out_paths, model_layers, strict=True)]


@dataclass(frozen=True)
class ConceptCell:
    """The files of one layer cell of one concept: inputs, the pairs target and one score target per metric."""

    layer_a: int
    layer_b: int
    codes_a: str
    codes_b: str
    labels_a: str
    labels_b: str
    members_a: str
    members_b: str
    decoder_a: str
    decoder_b: str
    pairs: str
    scores: dict  # metric -> (json path, null path)


def score_concept_cells(cells: list[ConceptCell], concept_path, *, variant_config: dict, correlation_config: dict,
                        min_latents: int, null_config: dict, metric_options: dict, pairing: str,
                        ids: Mapping[str, Any], threads: int | None = None, tokens_path=None,
                        split_config: dict | None = None, alpha: float | None = None, tokens_b_path=None,
                        alignment_path=None) -> list[dict]:
    """The `semantic_<cmp>` rule: pair and score one concept in every layer cell of one comparison.

    One job per (comparison, concept, pairing) keeps the toy run's process count small; each cell is
    computed exactly as a single-cell job would (the seed depends on the cell, not on the job).
    With `tokens_path` and `split_config`, concept latents are correlated on the pairing rows only; with
    `alignment_path` (a comparison across token stores) on the aligned pairing rows (featsim.alignment).
    """
    split = load_split(tokens_path, split_config) if tokens_path is not None else None
    rows = (comparison_rows(tokens_path, split_config, tokens_b_path, alignment_path)
            if alignment_path is not None else None)
    records = []
    for cell in cells:
        cell_ids = {**ids, "layer_a": cell.layer_a, "layer_b": cell.layer_b}
        write_concept_pairs(cell.codes_a, cell.codes_b, cell.members_a, cell.members_b, cell.pairs, variant_config,
                            correlation_config, min_latents, pairing, labels_a_path=cell.labels_a,
                            labels_b_path=cell.labels_b, ids=cell_ids, split=split, rows=rows)
        for metric, (json_path, null_path) in cell.scores.items():
            record = write_concept_score(cell.pairs, cell.decoder_a, cell.decoder_b, concept_path, json_path,
                                         null_path, metric, null_config, ids=cell_ids,
                                         options=metric_options.get(metric) or {}, threads=threads, alpha=alpha)
            records.append({**record, "metric": metric, "layer_a": cell.layer_a, "layer_b": cell.layer_b})
    return records
