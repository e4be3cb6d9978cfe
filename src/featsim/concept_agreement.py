"""Concept agreement (CA) of pairs: do paired latents carry the same concept label?

Among the pairs whose A latent has a concept label (`featsim.concept_labels`), CA is the share whose B
latent has the same label; per concept, the same among the pairs whose A latent has that concept. The
null permutes the B labels over those pairs (pairing and A labels fixed), so it asks whether the
pairing puts concepts together more often than the label frequencies alone would; p = (b+1)/(m+1),
b = permutations with at least the observed number of agreeing pairs (integer counts: no float ties).
Concept recall is the share of all concept-labelled A latents (paired or not) with an agreeing pair:
CA can be high on a few pairs, recall says how much of A's concept structure B shares.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

BATCH_ENTRIES = 1 << 22
"""Permutations are drawn in batches of about this many label entries (fixed: results never depend on memory)."""


@dataclass(frozen=True)
class AgreementStat:
    """CA of one set of pairs (all labelled A latents, or one concept's), with its permutation null."""

    concept: str | None  # None: every concept together
    status: str  # scored | not_scored (no labelled pairs)
    n_labelled: int  # pairs whose A latent has the concept (any concept when `concept` is None)
    n_agree: int  # of those, pairs whose B latent has the same concept
    agreement: float  # n_agree / n_labelled
    null_mean: float
    null_std: float
    p: float  # (b+1)/(m+1)
    p_min: float  # the smallest p this cell could reach: (#null draws at the largest attainable count + 1)/(m+1)
    recall: float  # n_agree_latents / n_concept_a (NaN without A's label counts)
    n_concept_a: int  # concept-labelled A latents, paired or not
    n_agree_latents: int  # distinct A latents with an agreeing pair
    n_permutations: int


@dataclass
class AgreementResult:
    """Overall and per-concept CA of one cell; `null` holds the overall null draws ([m] agreement values)."""

    overall: AgreementStat
    per_concept: dict[str, AgreementStat]
    null: np.ndarray

    def table(self) -> pd.DataFrame:
        """One row for the overall statistic (concept None) and one per concept of A's labels."""
        return pd.DataFrame([asdict(self.overall), *(asdict(stat) for stat in self.per_concept.values())])


def _is_label(values) -> np.ndarray:
    """True where a label is a concept (not None, NaN or the empty string)."""
    return np.array([isinstance(v, str) and v != "" for v in values], dtype=bool)


def _null_counts(codes_a: np.ndarray, codes_b: np.ndarray, groups: Sequence[np.ndarray], n_permutations: int,
                 seed: int) -> np.ndarray:
    """[len(groups), m] agreeing-pair counts inside each group (a bool mask over pairs) under B-label permutations."""
    rng = np.random.default_rng(seed)
    n = codes_a.size
    counts = np.empty((len(groups), n_permutations), dtype=np.int64)
    batch = max(1, BATCH_ENTRIES // max(n, 1))
    for start in range(0, n_permutations, batch):
        size = min(batch, n_permutations - start)
        permuted = np.tile(codes_b, (size, 1))  # [size, n], shuffled row by row in place
        rng.permuted(permuted, axis=1, out=permuted)
        agree = permuted == codes_a[None, :]
        for row, group in enumerate(groups):
            counts[row, start:start + size] = agree[:, group].sum(axis=1)
    return counts


def _stat(concept, n_labelled: int, n_agree: int, null_counts: np.ndarray, max_count: int, n_concept_a: int | None,
          n_agree_latents: int, n_permutations: int) -> AgreementStat:
    if n_labelled == 0:
        nan = float("nan")
        return AgreementStat(concept, "not_scored", 0, 0, nan, nan, nan, nan, nan,
                             nan if not n_concept_a else 0.0, int(n_concept_a or 0), 0, n_permutations)
    null = null_counts / n_labelled
    p = (np.count_nonzero(null_counts >= n_agree) + 1) / (n_permutations + 1)
    p_min = (np.count_nonzero(null_counts >= max_count) + 1) / (n_permutations + 1)
    recall = n_agree_latents / n_concept_a if n_concept_a else float("nan")
    return AgreementStat(concept, "scored", int(n_labelled), int(n_agree), n_agree / n_labelled, float(null.mean()),
                         float(null.std()), float(p), float(p_min), float(recall), int(n_concept_a or 0),
                         int(n_agree_latents), int(n_permutations))


def concept_agreement(concept_a, concept_b, *, n_permutations: int = 10000, seed: int = 0, latent_a=None,
                      concept_counts_a: Mapping[str, int] | None = None) -> AgreementResult:
    """CA of pairs given each pair's A and B concept labels (sequences of str; None, NaN or "" = unlabelled).

    `latent_a` (each pair's A latent id) and `concept_counts_a` (concept -> number of A latents with that
    label, paired or not) give concept recall; without them recall is NaN. Every concept statistic uses
    the same `n_permutations` permutations of the B labels, drawn from `seed`.
    """
    concept_a = np.asarray(list(concept_a), dtype=object)
    concept_b = np.asarray(list(concept_b), dtype=object)
    if concept_a.shape != concept_b.shape:
        raise ValueError(f"concept_a and concept_b must have one entry per pair, got {concept_a.size} and {concept_b.size}")
    if n_permutations < 1:
        raise ValueError(f"n_permutations must be positive, got {n_permutations}")
    labelled = _is_label(concept_a)
    names = sorted(set(concept_a[labelled]) | set(concept_b[_is_label(concept_b)]))
    code_of = {name: i for i, name in enumerate(names)}
    codes_a = np.array([code_of[v] for v in concept_a[labelled]], dtype=np.int32)
    codes_b = np.array([code_of.get(v, -1) if isinstance(v, str) else -1 for v in concept_b[labelled]], dtype=np.int32)
    latents = None if latent_a is None else np.asarray(latent_a)[labelled]
    agree = codes_a == codes_b
    concepts_a = sorted(set(concept_a[labelled]) | set(concept_counts_a or {}))
    groups = [np.ones(codes_a.size, dtype=bool)] + [codes_a == code_of.get(name, -2) for name in concepts_a]
    null_counts = _null_counts(codes_a, codes_b, groups, n_permutations, seed)
    b_counts = np.bincount(codes_b[codes_b >= 0], minlength=len(names))

    def agreeing_latents(mask):
        return int(mask.sum()) if latents is None else int(np.unique(latents[mask]).size)

    stats = []
    for group, name in zip(groups, [None, *concepts_a]):
        in_a = np.bincount(codes_a[group], minlength=len(names))
        max_count = int(np.minimum(in_a, b_counts).sum())  # every B label of a group concept placed on it
        if concept_counts_a is None:
            n_concept_a = None
        else:
            n_concept_a = sum(concept_counts_a.values()) if name is None else concept_counts_a.get(name, 0)
        stats.append(_stat(name, int(group.sum()), int(agree[group].sum()), null_counts[len(stats)], max_count,
                           n_concept_a, agreeing_latents(agree & group), n_permutations))
    overall_null = null_counts[0] / max(codes_a.size, 1)
    return AgreementResult(stats[0], {stat.concept: stat for stat in stats[1:]}, overall_null)


def pair_concepts(pairs_a, pairs_b, labels_a: pd.Series, labels_b: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Each pair's A and B concept label (None when unlabelled) from latent -> concept series."""
    return (labels_a.reindex(np.asarray(pairs_a)).to_numpy(dtype=object),
            labels_b.reindex(np.asarray(pairs_b)).to_numpy(dtype=object))


def cell_agreement(pairs_a, pairs_b, labels_a: pd.Series, labels_b: pd.Series, *, n_permutations: int = 10000,
                   seed: int = 0) -> AgreementResult:
    """CA and recall of one layer cell: pairs (A, B latent ids) and each side's latent -> concept labels."""
    concept_a, concept_b = pair_concepts(pairs_a, pairs_b, labels_a, labels_b)
    counts = labels_a[_is_label(labels_a.to_numpy())].value_counts().to_dict()
    return concept_agreement(concept_a, concept_b, n_permutations=n_permutations, seed=seed, latent_a=pairs_a,
                             concept_counts_a=counts)


def agreeing_latents(pairs_a, pairs_b, labels_a: pd.Series, labels_b: pd.Series) -> pd.Series:
    """latent -> bool over A's concept-labelled latents: has a pair whose B latent has the same concept.

    Unpaired labelled latents are False; this is the per-latent outcome behind recall and McNemar tests.
    """
    labelled = labels_a[_is_label(labels_a.to_numpy())]
    concept_a, concept_b = pair_concepts(pairs_a, pairs_b, labels_a, labels_b)
    agree = np.array([isinstance(x, str) and x == y for x, y in zip(concept_a, concept_b)], dtype=bool)
    agreeing = set(np.asarray(pairs_a)[agree].tolist())
    return pd.Series([latent in agreeing for latent in labelled.index.tolist()], index=labelled.index, dtype=bool)
