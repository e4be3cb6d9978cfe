"""Targets of the concept-evidence rules: concept labels of every latent, the agreement and contrast tables, and
the shared-concepts table, each with its provenance."""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import pandas as pd

from featsim.concept_evidence import COLUMN_DOCS as EVIDENCE_COLUMNS
from featsim.concept_evidence import agreement_table, contrasts_table, load_comparisons, load_concept_labels
from featsim.concept_labels import LABELLED, LabelRule, label_latents
from featsim.concepts import load_concept
from featsim.multiple_testing import DEFAULT_ALPHA
from featsim.parquet import read_parquet_provenance, write_parquet
from featsim.provenance import make_provenance, write_table
from featsim.semantic import SemanticConfig
from featsim.shared_concepts import COLUMN_DOCS as SHARED_CONCEPTS_COLUMNS
from featsim.shared_concepts import shared_concepts_html
from featsim.summary import write_html


def write_concept_labels(labels_paths, concept_paths, out_paths, rule: LabelRule, model_layers,
                         ids: Mapping[str, Any]) -> list[pd.DataFrame]:
    """The `concept_labels` rule: label every latent of each labels table (one job for all model layers);
    `model_layers` names the (model, layer) of each labels table, added to `ids` in its provenance."""
    concepts = [load_concept(path) for path in concept_paths]
    concept_records = [concept.record() for concept in concepts]
    tables = []
    for labels_path, out_path, (model, layer) in zip(labels_paths, out_paths, model_layers, strict=True):
        labels_top_k = read_parquet_provenance(labels_path).get("top_k")
        if labels_top_k is not None:
            SemanticConfig(min_examples=rule.min_examples).check_against_labels(int(labels_top_k))
        table = label_latents(pd.read_parquet(labels_path, columns=["latent", "top_words"]), concepts, rule)
        counts = table.loc[table["status"] == LABELLED, "concept"].value_counts().to_dict()
        provenance = make_provenance({"rule": rule.__dict__, "concepts": concept_records}, kind="concept_labels",
                                     labels=str(labels_path), **ids, model=model, layer=int(layer),
                                     n_labelled=int(sum(counts.values())),
                                     labelled_per_concept=counts,
                                     status_counts=table["status"].value_counts().to_dict())
        write_parquet(out_path, table, provenance)
        tables.append(table)
    return tables


def write_concept_evidence(comparisons: Mapping[str, Mapping], pairs_paths, corr_paths, label_paths, agreement_csv,
                           contrasts_csv, *, pairing: str, n_permutations: int, seed: int,
                           ids: Mapping[str, Any] | None = None, alternative: str = "greater",
                           alpha: float = DEFAULT_ALPHA) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The `concept_evidence` rule: both tables of one pairing variant (CSV + provenance json beside each:
    the comparisons, permutations, seed, alternative and alpha, and `ids`)."""
    cells = load_comparisons(comparisons, pairs_paths, corr_paths)
    labels = load_concept_labels(label_paths)
    agreement = agreement_table(cells, labels, pairing=pairing, n_permutations=n_permutations, seed=seed, alpha=alpha)
    contrasts = contrasts_table(cells, labels, pairing=pairing, n_permutations=n_permutations, seed=seed,
                                alternative=alternative, alpha=alpha)
    slice_ = {"comparisons": comparisons, "permutations": n_permutations, "seed": seed, "alternative": alternative,
              "alpha": alpha}
    ids = dict(ids or {})
    write_table(agreement_csv, agreement, slice_, EVIDENCE_COLUMNS,
                ids={"kind": "concept_agreement", "pairing": pairing, "alpha": alpha, **ids})
    write_table(contrasts_csv, contrasts, slice_, EVIDENCE_COLUMNS,
                ids={"kind": "contrasts", "pairing": pairing, "alpha": alpha, "alternative": alternative, **ids})
    return agreement, contrasts


def write_shared_concepts(table: pd.DataFrame, table_path: str | os.PathLike, html_path: str | os.PathLike, *,
                          contrasts: Mapping[str, Sequence[str]], correction: str, alpha: float,
                          ids: Mapping[str, Any]) -> None:
    """The `shared_concepts` rule's outputs: the CSV (provenance beside it: contrasts, correction, alpha and
    `ids`) and its HTML page."""
    write_table(table_path, table, {"contrasts": contrasts, "correction": correction, "alpha": alpha},
                SHARED_CONCEPTS_COLUMNS,
                ids={"kind": "shared_concepts", **ids})
    write_html(html_path, shared_concepts_html(table, alpha=alpha))
