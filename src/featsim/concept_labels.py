"""Concept labels of latents: the one concept a latent's held-out top examples are about, with the evidence.

A latent gets concept c when c's keywords (whole words, the concept's case rule, homographs only if it
opts in: `featsim.concepts`) match at least `min_fraction` of its top examples, at least `min_examples`
of them, with at least `min_keywords` distinct keywords: a latent that fires on one word is a token
feature, not a concept feature. The candidate is the concept with most matches; a tie for most leaves the
latent unlabelled. Every latent gets a row, labelled or not, with the best candidate's
evidence and a status saying why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

from featsim.concepts import Concept, normalise_word
from featsim.errors import ConfigError

LABEL_COLUMNS = ("latent", "concept", "status", "n_examples", "n_matches", "fraction", "n_keywords", "keywords",
                 "keyword_counts", "candidate_concepts", "candidate_matches")
LABELLED = "labelled"
STATUSES = (LABELLED, "no_examples", "no_match", "below_fraction", "tie", "too_few_keywords")
"""Why a latent has (or lacks) a label; the checks run in this order."""


@dataclass(frozen=True)
class LabelRule:
    """The thresholds of a concept label (config keys `semantic.min_fraction`, `min_examples`, `min_keywords`)."""

    min_fraction: float = 0.5  # share of the latent's top examples the concept's keywords must match
    min_keywords: int = 3  # distinct keywords among those matches
    min_examples: int = 1  # matching top examples

    def __post_init__(self) -> None:
        if not 0 <= self.min_fraction <= 1:
            raise ConfigError("semantic.min_fraction", f"must be in [0, 1], got {self.min_fraction!r}")
        for key in ("min_keywords", "min_examples"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"semantic.{key}", f"must be a positive integer, got {value!r}")

    @classmethod
    def from_config(cls, semantic: Mapping[str, Any]) -> "LabelRule":
        """From the `semantic` config slice (its other keys are ignored)."""
        return cls(**{key: semantic[key] for key in ("min_fraction", "min_keywords", "min_examples") if key in semantic})


def _keyword_matches(words: pd.Series, concepts: Iterable[Concept]) -> pd.DataFrame:
    """(position in `words`, concept id, keyword) for every example word that is a keyword of a concept."""
    distinct = pd.unique(words.astype(str))
    rows = []
    for concept in concepts:
        lookup = concept.keyword_lookup()
        for word in distinct:
            keyword = lookup.get(concept.fold(normalise_word(word)))
            if keyword is not None:
                rows.append((word, concept.id, keyword))
    table = pd.DataFrame(rows, columns=["word", "concept", "keyword"])
    examples = pd.DataFrame({"word": words.astype(str).to_numpy(), "position": np.arange(len(words))})
    return examples.merge(table, on="word", how="inner")


def label_latents(labels: pd.DataFrame, concepts: Iterable[Concept], rule: LabelRule = LabelRule()) -> pd.DataFrame:
    """One row per latent of `labels` (columns `latent`, `top_words`: its top examples' rebuilt words).

    Returns LABEL_COLUMNS: `concept` (missing when unlabelled) and `status` (STATUSES); the evidence of the
    label, or of the best candidate when there is none: `n_matches` of `n_examples` top examples
    (`fraction`), the matched `keywords` with their `keyword_counts` (descending, ties alphabetical), and
    every concept with a match (`candidate_concepts`, `candidate_matches`, descending).
    """
    missing = {"latent", "top_words"} - set(labels.columns)
    if missing:
        raise ValueError(f"labels table lacks columns {sorted(missing)}; rebuild it with the labels rule")
    concepts = list(concepts)
    latents = labels["latent"].to_numpy(dtype=np.int64)
    n_examples = np.array([0 if words is None else len(words) for words in labels["top_words"]], dtype=np.int64)
    owner = np.repeat(latents, n_examples)
    words = pd.Series([word for words in labels["top_words"] if words is not None for word in words], dtype=object)
    matches = _keyword_matches(words, concepts)
    matches["latent"] = owner[matches["position"].to_numpy()]
    keyword_counts = (matches.groupby(["latent", "concept", "keyword"]).size().rename("count").reset_index()
                      .sort_values(["latent", "concept", "count", "keyword"], ascending=[True, True, False, True]))
    per_concept = keyword_counts.groupby(["latent", "concept"]).agg(
        n_matches=("count", "sum"), n_keywords=("keyword", "size"),
        keywords=("keyword", list), keyword_counts=("count", lambda counts: [int(c) for c in counts])).reset_index()
    per_concept = per_concept.sort_values(["latent", "n_matches", "concept"], ascending=[True, False, True])
    grouped = per_concept.groupby("latent", sort=True)
    best = grouped.head(1).set_index("latent")
    n_best = grouped["n_matches"].transform("max")
    n_tied = (per_concept["n_matches"] == n_best).groupby(per_concept["latent"]).sum()
    candidates = grouped.agg(candidate_concepts=("concept", list),
                             candidate_matches=("n_matches", lambda counts: [int(c) for c in counts]))

    table = pd.DataFrame({"latent": latents, "n_examples": n_examples})
    on = pd.Index(latents)
    n_matches = best["n_matches"].reindex(on).fillna(0).to_numpy(dtype=np.int64)
    n_keywords = best["n_keywords"].reindex(on).fillna(0).to_numpy(dtype=np.int64)
    has_match = on.isin(best.index)
    status = np.select(
        [n_examples == 0, ~has_match,
         (n_matches < rule.min_examples) | (n_matches < rule.min_fraction * n_examples),
         n_tied.reindex(on).fillna(0).to_numpy() > 1, n_keywords < rule.min_keywords],
        ["no_examples", "no_match", "below_fraction", "tie", "too_few_keywords"], default=LABELLED)
    labelled = status == LABELLED
    table["concept"] = pd.Series(np.where(labelled, best["concept"].reindex(on).to_numpy(dtype=object), None),
                                 dtype=object)
    table["status"] = status
    table["n_matches"] = n_matches
    table["fraction"] = n_matches / np.maximum(n_examples, 1)
    table["n_keywords"] = n_keywords
    for column, source in (("keywords", best), ("keyword_counts", best), ("candidate_concepts", candidates),
                           ("candidate_matches", candidates)):
        values = source[column].reindex(on).to_numpy(dtype=object)
        table[column] = [value if isinstance(value, list) else [] for value in values]
    return table[list(LABEL_COLUMNS)]


def concept_of(table: pd.DataFrame) -> pd.Series:
    """latent -> concept label (missing when unlabelled), from a `label_latents` table."""
    return table.set_index("latent")["concept"]
