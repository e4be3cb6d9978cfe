"""Semantic subspaces: latents tied to a concept's keywords, paired and scored within the concept.

1. Membership (`concept_members`): a latent belongs to a concept when at least `min_examples` of its
   top activating examples (the labels step's rebuilt `top_words`), and at least `min_fraction` of
   them, are whole-word keyword matches under the concept's case rule; homographs count only if the
   concept opts in. Whole words mean a latent firing on the "man" of "Brockman" sees the word
   "Brockman", which is not "man".
2. Pairing (`concept_pairs`): correlation restricted to the concept latents of both sides, then the
   chosen pairing variant; a concept with fewer than `min_latents` latents on a side, or fewer pairs,
   is recorded as not scored with the reason.
3. Scoring (`score_concept`): the metric and its shuffled-pairing null at exactly that n, plus which
   keywords carry the pairs.
4. Toy ground truth (`assignment_accuracy`): precision/recall of membership against the corpus
   generator's word -> category map.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import pandas as pd

from featsim.concepts import Concept, ConceptFileError, normalise_word
from featsim.errors import ConfigError, reject_unknown_keys
from featsim.pairing import pair_variant

MEMBER_COLUMNS = ("latent", "n_matches", "n_examples", "keywords", "keyword_counts", "top_keyword")
PAIR_COLUMNS = ("a", "b", "corr", "keywords_a", "keywords_b", "top_keyword_a", "top_keyword_b", "shared_keywords")
STATUS_PAIRED, STATUS_NOT_SCORED = "paired", "not_scored"


@dataclass(frozen=True)
class SemanticConfig:
    """The `semantic` config slice (defaults as in workflow/schemas/config.schema.yaml)."""

    concepts: tuple[str, ...] = ()  # concept files or glob patterns
    pairing: str | None = None  # pairing variant used inside concepts (default: the first of `pairings`)
    min_examples: int = 3  # top examples that must be whole-word keyword matches
    min_fraction: float = 0.5  # and at least this share of the latent's top examples
    min_latents: int = 3  # fewer concept latents on a side, or fewer pairs: not scored
    metrics: tuple[str, ...] | None = None  # metrics scored on concepts (default: the top-level metrics)
    truth_min_fraction: float = 0.5  # toy ground truth: share of top examples a category needs
    min_keywords: int = 3  # concept labels (featsim.concept_labels): distinct keywords a label needs
    agreement_permutations: int = 10000  # concept agreement and contrast nulls (featsim.concept_evidence)

    def __post_init__(self) -> None:
        for key in ("min_examples", "min_latents", "min_keywords", "agreement_permutations"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"semantic.{key}", f"must be a positive integer, got {value!r}")
        if not 0 <= self.min_fraction <= 1:
            raise ConfigError("semantic.min_fraction", f"must be in [0, 1], got {self.min_fraction!r}")
        if not 0 < self.truth_min_fraction <= 1:
            raise ConfigError("semantic.truth_min_fraction", f"must be in (0, 1], got {self.truth_min_fraction!r}")

    @classmethod
    def from_config(cls, values: Mapping[str, Any] | None) -> "SemanticConfig":
        """Build from the `semantic` config slice; unknown keys are an error."""
        values = dict(values or {})
        reject_unknown_keys(values, cls.__dataclass_fields__, "semantic")
        for key in ("concepts", "metrics"):
            if values.get(key) is not None:
                values[key] = tuple(values[key])
        return cls(**values)

    def check_against_labels(self, labels_top_k: int) -> None:
        """`min_examples` must be reachable with the `labels.top_k` examples stored per latent."""
        if self.min_examples > labels_top_k:
            raise ConfigError("semantic.min_examples",
                              f"{self.min_examples} exceeds labels.top_k = {labels_top_k}: no latent could qualify; "
                              "lower it or raise labels.top_k")


# ---------------------------------------------------------------- membership


def _word_examples(labels: pd.DataFrame) -> pd.DataFrame:
    """(latent, word) rows: one per top example of every latent (empty lists give no rows)."""
    missing = {"latent", "top_words"} - set(labels.columns)
    if missing:
        raise ValueError(f"labels table lacks columns {sorted(missing)}; rebuild it with the labels rule")
    exploded = labels[["latent", "top_words"]].explode("top_words").dropna(subset=["top_words"])
    return exploded.rename(columns={"top_words": "word"})


def _matched_keywords(words: pd.Series, concept: Concept, include_homographs: bool | None = None) -> pd.Series:
    """Per example, the keyword its word matches as a whole word (None if none); each distinct word once."""
    lookup = concept.keyword_lookup(include_homographs)
    distinct = pd.unique(words.astype(str))
    keyword_of = {word: lookup.get(concept.fold(normalise_word(word))) for word in distinct}
    return words.astype(str).map(keyword_of)


def concept_members(labels: pd.DataFrame, concept: Concept, min_examples: int,
                    min_fraction: float = 0.0) -> tuple[pd.DataFrame, dict]:
    """Latents of a concept (MEMBER_COLUMNS, sorted by latent) and a diagnostics dict.

    A latent is a member when at least `min_examples` of its top examples, and at least `min_fraction`
    of them, are whole-word keyword matches: a concept latent fires mostly on the concept, not a
    syntactic position that sometimes holds a concept word.

    `keywords` lists the matched keywords by descending count (ties alphabetical), with
    `keyword_counts` alongside; `top_keyword` is the first. `n_examples` is the latent's number of top
    examples. Diagnostics count latents with any match and latents that only homographs would admit.
    """
    examples = _word_examples(labels)
    n_examples = labels.set_index("latent")["top_words"].map(lambda words: 0 if words is None else len(words))
    examples = examples.assign(keyword=_matched_keywords(examples["word"], concept))
    matched = examples.dropna(subset=["keyword"])
    counts = matched.groupby(["latent", "keyword"]).size().rename("count").reset_index()
    n_matches = counts.groupby("latent")["count"].sum()
    share = n_matches / n_examples.reindex(n_matches.index).clip(lower=1)
    member_ids = n_matches.index[(n_matches >= min_examples) & (share >= min_fraction)]
    chosen = counts[counts["latent"].isin(member_ids)].sort_values(["latent", "count", "keyword"],
                                                                    ascending=[True, False, True])
    grouped = chosen.groupby("latent", sort=True)
    members = pd.DataFrame({
        "latent": np.asarray(member_ids.sort_values(), dtype=np.int64),
    })
    keyword_lists = grouped["keyword"].apply(list)
    count_lists = grouped["count"].apply(lambda values: [int(v) for v in values])
    members["n_matches"] = members["latent"].map(n_matches).astype(np.int64)
    members["n_examples"] = members["latent"].map(n_examples).astype(np.int64)
    members["keywords"] = members["latent"].map(keyword_lists)
    members["keyword_counts"] = members["latent"].map(count_lists)
    members["top_keyword"] = members["keywords"].map(lambda words: words[0])
    members = members[list(MEMBER_COLUMNS)].reset_index(drop=True)
    diagnostics = {
        "concept": concept.id,
        "min_examples": int(min_examples),
        "min_fraction": float(min_fraction),
        "n_latents": int(len(labels)),
        "n_members": int(len(members)),
        "n_latents_any_match": int(matched["latent"].nunique()),
        "n_members_if_homographs_included": _n_members_with_homographs(examples, concept, min_examples),
        "keywords_used": dict(Counter(members["top_keyword"]).most_common()),
        "homographs_excluded": [] if concept.include_homographs else sorted(concept.homographs),
    }
    return members, diagnostics


def _n_members_with_homographs(examples: pd.DataFrame, concept: Concept, min_examples: int) -> int:
    keyword = _matched_keywords(examples["word"], concept, include_homographs=True)
    per_latent = examples.assign(keyword=keyword).dropna(subset=["keyword"]).groupby("latent").size()
    return int((per_latent >= min_examples).sum())


# ---------------------------------------------------------------- pairing inside a concept


@dataclass
class ConceptPairs:
    """Pairs of one concept cell, or the reason it was not scored."""

    status: str  # STATUS_PAIRED | STATUS_NOT_SCORED
    table: pd.DataFrame  # PAIR_COLUMNS (empty when not scored)
    info: dict = field(default_factory=dict)  # n latents per side, reason, pairing diagnostics


def _empty_pairs() -> pd.DataFrame:
    return pd.DataFrame({column: pd.Series(dtype=dtype) for column, dtype in zip(
        PAIR_COLUMNS, ("int64", "int64", "float64", "object", "object", "object", "object", "object"))})


def _not_scored(reason: str, info: dict) -> ConceptPairs:
    return ConceptPairs(STATUS_NOT_SCORED, _empty_pairs(), {**info, "status": STATUS_NOT_SCORED, "reason": reason})


def concept_pairs(codes_a, codes_b, members_a: pd.DataFrame, members_b: pd.DataFrame, variant, *,
                  top_k: int, min_active: int, min_latents: int, device: str = "auto", block_latents: int = 4096,
                  labels_a: pd.DataFrame | None = None, labels_b: pd.DataFrame | None = None,
                  key: str = "semantic.pairing", rows: np.ndarray | None = None) -> ConceptPairs:
    """Correlate the concept latents of A and B (only those), pair them with `variant`, tag keywords.

    `variant` is a `featsim.pairing.PairingVariant`; `labels_*` are needed when it filters junk
    latents or requires a shared top token. Fewer than `min_latents` concept latents on a side, or
    fewer than `min_latents` pairs, gives a not-scored result with the reason. `rows`: the token rows
    to correlate over (the pairing part of a held-out split), default all.
    """
    from featsim.correlate import max_correlation

    latents_a = np.sort(members_a["latent"].to_numpy(dtype=np.int64))
    latents_b = np.sort(members_b["latent"].to_numpy(dtype=np.int64))
    info: dict[str, Any] = {"n_latents_a": int(len(latents_a)), "n_latents_b": int(len(latents_b)),
                            "min_latents": int(min_latents)}
    if len(latents_a) < min_latents or len(latents_b) < min_latents:
        return _not_scored(f"too few concept latents: A has {len(latents_a)}, B has {len(latents_b)}, "
                           f"semantic.min_latents is {min_latents}", info)
    corr = max_correlation(codes_a, codes_b, top_k=top_k, min_active=min_active, device=device,
                           latents_a=latents_a, latents_b=latents_b, block_latents=block_latents, rows=rows)
    info.update({"n_used_a": int(corr.used_a.sum()), "n_used_b": int(corr.used_b.sum()),
                 "n_tokens": int(corr.n_tokens)})
    pairs = pair_variant(corr, variant, labels_a, labels_b, key=key)
    info["pairing"] = pairs.diagnostics
    if len(pairs) < min_latents:
        return _not_scored(f"too few pairs: {len(pairs)} after pairing {info['n_used_a']} A and {info['n_used_b']} "
                           f"B concept latents (min_active {min_active}), semantic.min_latents is {min_latents}", info)
    return ConceptPairs(STATUS_PAIRED, pair_keywords(pairs.a, pairs.b, pairs.corr, members_a, members_b),
                        {**info, "status": STATUS_PAIRED, "n_pairs": int(len(pairs))})


def pair_keywords(a: np.ndarray, b: np.ndarray, corr: np.ndarray, members_a: pd.DataFrame,
                  members_b: pd.DataFrame) -> pd.DataFrame:
    """The pairs table (PAIR_COLUMNS): each pair with both latents' matched keywords and the shared ones."""
    keywords_a = members_a.set_index("latent")["keywords"]
    keywords_b = members_b.set_index("latent")["keywords"]
    words_a = [list(keywords_a[latent]) for latent in np.asarray(a).tolist()]
    words_b = [list(keywords_b[latent]) for latent in np.asarray(b).tolist()]
    return pd.DataFrame({
        "a": np.asarray(a, dtype=np.int64),
        "b": np.asarray(b, dtype=np.int64),
        "corr": np.asarray(corr, dtype=np.float64),
        "keywords_a": words_a,
        "keywords_b": words_b,
        "top_keyword_a": [words[0] for words in words_a],
        "top_keyword_b": [words[0] for words in words_b],
        "shared_keywords": [sorted(set(first) & set(second)) for first, second in zip(words_a, words_b)],
    })


def keyword_summary(table: pd.DataFrame, most_common: int = 20) -> dict:
    """Which keywords carry the pairs: top keyword counts per side and shared-keyword counts."""
    shared = Counter(word for words in table["shared_keywords"] for word in words)
    return {
        "a": dict(Counter(table["top_keyword_a"]).most_common(most_common)),
        "b": dict(Counter(table["top_keyword_b"]).most_common(most_common)),
        "shared": dict(shared.most_common(most_common)),
        "n_pairs_sharing_a_keyword": int(sum(len(words) > 0 for words in table["shared_keywords"])),
    }


# ---------------------------------------------------------------- scoring


def score_concept(table: pd.DataFrame, info: dict, decoder_a: np.ndarray, decoder_b: np.ndarray, metric: str,
                  n_permutations: int, seed: int, options: dict | None = None, concept: Concept | None = None,
                  **null_options) -> tuple[dict, np.ndarray]:
    """Score a concept's pairs with the shuffled-pairing null at exactly their n; not-scored passes through.

    Returns the json-ready record (`featsim.scoring.score_pairs_with_null`'s, plus the concept, the
    latent counts per side, the keywords carrying the pairs and `few_pairs_flag`: the n < 5 k guard of
    the SVCCA family) and the null draws. `null_options`: device, precision, threads, progress, alpha
    (status `underpowered` when the cell's smallest attainable p is not below it).
    """
    from featsim.scoring import score_pairs_with_null

    header = {"concept": concept.id if concept else None, "concept_name": concept.name if concept else None,
              "metric": metric, "n_latents_a": info.get("n_latents_a"), "n_latents_b": info.get("n_latents_b")}
    if info.get("status") != STATUS_PAIRED:
        record = {**header, "status": STATUS_NOT_SCORED, "reason": info.get("reason", "not paired"),
                  "observed": None, "null_mean": None, "null_std": None, "p_value": None, "z": None,
                  "p_min": None, "n_pairs": int(len(table)), "n_permutations": int(n_permutations), "seed": int(seed),
                  "flags": ["not_scored"], "keywords": None, "few_pairs_flag": None}
        return record, np.empty(0)
    a = table["a"].to_numpy(dtype=np.int64)
    b = table["b"].to_numpy(dtype=np.int64)
    score, null = score_pairs_with_null(decoder_a, decoder_b, a, b, metric, n_permutations, seed, options or {},
                                        **null_options)
    flags = list(score.get("flags") or [])
    record = {**header, **score, "n_pairs": int(score.get("n_pairs", len(table))),
              "keywords": keyword_summary(table), "few_pairs_flag": any(flag.startswith("n_lt") for flag in flags)}
    return record, null


# ---------------------------------------------------------------- toy ground truth


def latent_categories(labels: pd.DataFrame, categories: Mapping[str, str], min_fraction: float,
                      min_examples: int) -> pd.Series:
    """Ground-truth category per latent: the category of at least `min_fraction` of its top words.

    Latents with fewer than `min_examples` top examples (no rule could assign them) are left out;
    latents without a dominant category map to None. Words are compared case-insensitively.
    """
    folded = {word.casefold(): category for word, category in categories.items()}
    examples = _word_examples(labels)
    examples = examples.assign(category=examples["word"].astype(str).map(
        lambda word: folded.get(normalise_word(word).casefold())))
    n_examples = examples.groupby("latent").size()
    eligible = n_examples.index[n_examples >= min_examples]
    counts = examples.dropna(subset=["category"]).groupby(["latent", "category"]).size().rename("count").reset_index()
    counts = counts[counts["latent"].isin(eligible)]
    counts["fraction"] = counts["count"] / counts["latent"].map(n_examples)
    dominant = counts[counts["fraction"] >= min_fraction].sort_values(["latent", "count", "category"],
                                                                      ascending=[True, False, True])
    truth = pd.Series(None, index=pd.Index(eligible, name="latent"), dtype=object)
    best = dominant.drop_duplicates("latent").set_index("latent")["category"]
    truth.loc[best.index] = best
    return truth


def concept_category(concept: Concept, categories: Mapping[str, str]) -> str:
    """The ground-truth category a concept stands for: its `category`, else its id (checked)."""
    category = concept.category or concept.id
    known = sorted(set(categories.values()))
    if category not in known:
        raise ConceptFileError(concept.path or concept.id,
                               f"category '{category}' is not in the corpus categories ({', '.join(known)}); "
                               "set 'category:' in the concept file")
    return category


def _ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def assignment_accuracy(members: Mapping[str, pd.DataFrame], categories: Mapping[str, str], labels: pd.DataFrame,
                        concepts: Mapping[str, Concept], min_examples: int, min_fraction: float = 0.5) -> dict:
    """Precision and recall of concept membership against the toy corpus's word -> category map.

    A latent truly belongs to category c when at least `min_fraction` of its top words are words of c
    (`latent_categories`). Per concept: precision = correct members / members, recall = correct
    members / latents truly of its category. Overall: micro (pooled counts) and macro (mean) values.
    """
    truth = latent_categories(labels, categories, min_fraction, min_examples)
    per_concept = {}
    totals = Counter()
    for concept_id, table in members.items():
        concept = concepts[concept_id]
        category = concept_category(concept, categories)
        assigned = set(table["latent"].astype(int))
        true_latents = set(truth.index[truth == category].astype(int))
        correct = assigned & true_latents
        per_concept[concept_id] = {
            "category": category,
            "n_assigned": len(assigned),
            "n_true": len(true_latents),
            "n_correct": len(correct),
            "precision": _ratio(len(correct), len(assigned)),
            "recall": _ratio(len(correct), len(true_latents)),
            "false_positives": sorted(assigned - true_latents)[:50],
            "false_negatives": sorted(true_latents - assigned)[:50],
        }
        totals.update({"assigned": len(assigned), "true": len(true_latents), "correct": len(correct)})
    precisions = [row["precision"] for row in per_concept.values() if row["precision"] is not None]
    recalls = [row["recall"] for row in per_concept.values() if row["recall"] is not None]
    return {
        "concepts": per_concept,
        "overall": {
            "micro_precision": _ratio(totals["correct"], totals["assigned"]),
            "micro_recall": _ratio(totals["correct"], totals["true"]),
            "macro_precision": float(np.mean(precisions)) if precisions else None,
            "macro_recall": float(np.mean(recalls)) if recalls else None,
            "n_assigned": totals["assigned"],
            "n_true": totals["true"],
            "n_correct": totals["correct"],
        },
        "n_latents": int(len(labels)),
        "n_latents_eligible": int(len(truth)),
        "n_latents_with_category": int(truth.notna().sum()),
        "min_examples": int(min_examples),
        "truth_min_fraction": float(min_fraction),
    }
