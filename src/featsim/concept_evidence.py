"""Concept evidence over a layer grid: concept agreement of every comparison, contrasts between comparisons.

Tables, one per pairing variant (the `concept_evidence` rule; paths come from the caller):
- agreement (`AGREEMENT_COLUMNS`): per (comparison, layer cell) an overall row (`concept` empty) and one row
  per concept; Holm and BH over the layer grid of (comparison, concept).
- contrasts (`CONTRAST_COLUMNS`): per (comparison X, contrast Y, cell) the McNemar test (shared A side) or
  recall permutation test (different A sides), and the difference-in-differences on best correlation
  (shared A side); Holm and BH over the layer grid of (X, Y, test).
Cell seeds: `featsim.scoring.cell_seed(seed, <table>, comparison, pairing, "A{la}_B{lb}")`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from featsim.concept_agreement import agreeing_latents, cell_agreement
from featsim.contrasts import DID, MCNEMAR, RECALL_PERMUTATION, difference_in_differences, match_cells, \
    mcnemar_exact, recall_difference_test
from featsim.multiple_testing import DEFAULT_ALPHA, adjust_pvalues

AGREEMENT_COLUMNS = ["comparison", "concept", "layer_a", "layer_b", "status", "reason", "n_labelled", "n_agree",
                     "agreement", "null_mean", "null_std", "p", "p_holm", "p_bh", "p_min", "p_min_adjusted", "recall",
                     "n_concept_a", "n_agree_latents", "n_permutations", "seed", "family", "family_size"]
CONTRAST_COLUMNS = ["comparison", "contrast", "layer_a", "layer_b", "layer_b_contrast", "match", "test", "status",
                    "reason", "statistic", "n", "p", "p_holm", "p_bh", "p_min", "p_min_adjusted", "value_x", "value_y",
                    "null_mean", "null_std", "n_permutations", "seed", "family", "family_size"]


def adjust_families(table: pd.DataFrame, family_keys: Sequence[str], alpha: float = DEFAULT_ALPHA) -> pd.DataFrame:
    """Holm and BH adjusted p within each family (the layer grid of `family_keys`; not-scored cells stay out).

    A scored cell whose smallest attainable Holm-adjusted p (`p_min_adjusted`: Holm over the family's p_min)
    is not below `alpha` becomes `underpowered`: it cannot be significant whatever the data.
    """
    table = table.copy()
    for column in ("p_holm", "p_bh", "p_min_adjusted"):
        table[column] = np.nan
    table["family_size"] = 0
    keys = [table[key].fillna("").astype(str) for key in family_keys]
    for _, index in table.groupby(keys, sort=False).groups.items():
        p = table.loc[index, "p"].to_numpy(dtype=np.float64)
        table.loc[index, "p_holm"] = adjust_pvalues(p, "holm")
        table.loc[index, "p_bh"] = adjust_pvalues(p, "bh")
        p_min = np.where(np.isnan(p), np.nan, table.loc[index, "p_min"].to_numpy(dtype=np.float64))
        table.loc[index, "p_min_adjusted"] = adjust_pvalues(p_min, "holm")
        table.loc[index, "family_size"] = int(np.count_nonzero(~np.isnan(p)))
    weak = (table["status"] == "scored") & (table["p_min_adjusted"] >= alpha)
    table.loc[weak, "status"] = "underpowered"
    table.loc[weak, "reason"] = [f"smallest attainable Holm-adjusted p is {q:.3g} >= alpha {alpha:g} (raw floor "
                                 f"{p_min:.3g}; family of {size} cells): it cannot be significant"
                                 for q, p_min, size in zip(table.loc[weak, "p_min_adjusted"], table.loc[weak, "p_min"],
                                                           table.loc[weak, "family_size"])]
    return table


@dataclass
class ComparisonCells:
    """What the concept evidence of one comparison reads, per layer cell (la, lb)."""

    name: str
    model_a: str
    model_b: str
    layers_a: list[int]
    layers_b: list[int]
    pairs: dict[tuple[int, int], pd.DataFrame]  # cell -> pairs table (columns a, b)
    best_corr_a: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)  # cell -> [d_a] best r, NaN if not live
    contrast: list[str] = field(default_factory=list)


def _seed(base_seed: int, table: str, comparison: str, pairing: str, layer_a: int, layer_b: int) -> int:
    from featsim.scoring import cell_seed

    return cell_seed(base_seed, table, comparison, pairing, f"A{layer_a}_B{layer_b}")


def agreement_table(comparisons: Sequence[ComparisonCells], labels: Mapping[tuple[str, int], pd.Series], *,
                    pairing: str, n_permutations: int, seed: int, alpha: float = DEFAULT_ALPHA) -> pd.DataFrame:
    """CA of every cell of every comparison (`labels`: (model, layer) -> latent -> concept or None)."""
    frames = []
    for cmp in comparisons:
        for (layer_a, layer_b), pairs in cmp.pairs.items():
            cell_seed = _seed(seed, "concept_agreement", cmp.name, pairing, layer_a, layer_b)
            result = cell_agreement(pairs["a"].to_numpy(), pairs["b"].to_numpy(), labels[(cmp.model_a, layer_a)],
                                    labels[(cmp.model_b, layer_b)], n_permutations=n_permutations, seed=cell_seed)
            frames.append(result.table().assign(comparison=cmp.name, layer_a=layer_a, layer_b=layer_b, seed=cell_seed))
    for frame in frames:
        frame["reason"] = np.where(frame["status"] == "scored", "", "no pair has an A latent with this concept")
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=AGREEMENT_COLUMNS)
    table["concept"] = table["concept"].fillna("")
    table = adjust_families(table, ["comparison", "concept"], alpha)
    table["family"] = [f"layer grid of {c}, {pairing}, " + (f"concept {k}" if k else "all concepts")
                       for c, k in zip(table["comparison"], table["concept"])]
    order = table["concept"].ne("").astype(int)  # overall row first within a cell
    table = table.assign(_order=order).sort_values(["comparison", "layer_a", "layer_b", "_order", "concept"],
                                                   kind="stable")
    return table[AGREEMENT_COLUMNS].reset_index(drop=True)


def _result_row(result, seed: int | None) -> dict:
    row = asdict(result)
    return {**row, "status": "scored" if np.isfinite(row["p"]) else "not_scored", "reason": "" if np.isfinite(
        row["p"]) else "no latents to test (no concept-labelled latents, or none live in both)", "seed": seed}


def contrast_rows(x: ComparisonCells, y: ComparisonCells, labels: Mapping[tuple[str, int], pd.Series], *,
                  pairing: str, n_permutations: int, seed: int, alternative: str = "greater") -> list[dict]:
    """Every test of X against Y in every cell of X (unmatched cells get not_scored rows with the reason)."""
    shared_a = x.model_a == y.model_a
    tests = (MCNEMAR, DID) if shared_a else (RECALL_PERMUTATION,)
    rows = []
    for match in match_cells(x.layers_a, x.layers_b, y.layers_a, y.layers_b):
        cell = (match.layer_a, match.layer_b)
        base = {"comparison": x.name, "contrast": y.name, "layer_a": match.layer_a, "layer_b": match.layer_b,
                "layer_b_contrast": match.layer_b_y, "match": match.match}
        if match.layer_b_y is None:
            rows += [{**base, "test": test, "status": "not_scored", "reason": match.reason} for test in tests]
            continue
        cell_y = (match.layer_a, match.layer_b_y)
        labels_ax, labels_bx = labels[(x.model_a, match.layer_a)], labels[(x.model_b, match.layer_b)]
        labels_ay, labels_by = labels[(y.model_a, match.layer_a)], labels[(y.model_b, match.layer_b_y)]
        agree_x = agreeing_latents(x.pairs[cell]["a"], x.pairs[cell]["b"], labels_ax, labels_bx)
        agree_y = agreeing_latents(y.pairs[cell_y]["a"], y.pairs[cell_y]["b"], labels_ay, labels_by)
        if shared_a:
            rows.append({**base, **_result_row(mcnemar_exact(agree_x.to_numpy(), agree_y.reindex(agree_x.index)
                                                             .to_numpy(), alternative), None)})
            did_seed = _seed(seed, f"did/{y.name}", x.name, pairing, match.layer_a, match.layer_b)
            is_concept = labels_ax.reindex(np.arange(x.best_corr_a[cell].size)).map(
                lambda v: isinstance(v, str) and v != "").to_numpy(dtype=bool)
            rows.append({**base, **_result_row(difference_in_differences(
                x.best_corr_a[cell], y.best_corr_a[cell_y], is_concept, n_permutations=n_permutations, seed=did_seed,
                alternative=alternative), did_seed)})
        else:
            recall_seed = _seed(seed, f"recall/{y.name}", x.name, pairing, match.layer_a, match.layer_b)
            rows.append({**base, **_result_row(recall_difference_test(
                agree_x.to_numpy(), agree_y.to_numpy(), n_permutations=n_permutations, seed=recall_seed,
                alternative=alternative), recall_seed)})
    return rows


def contrasts_table(comparisons: Sequence[ComparisonCells], labels: Mapping[tuple[str, int], pd.Series], *,
                    pairing: str, n_permutations: int, seed: int, alternative: str = "greater",
                    alpha: float = DEFAULT_ALPHA) -> pd.DataFrame:
    """Every configured contrast of every comparison; Holm and BH over the layer grid of (X, Y, test)."""
    by_name = {cmp.name: cmp for cmp in comparisons}
    rows = []
    for x in comparisons:
        for other in x.contrast:
            rows += contrast_rows(x, by_name[other], labels, pairing=pairing, n_permutations=n_permutations, seed=seed,
                                  alternative=alternative)
    table = pd.DataFrame(rows, columns=[c for c in CONTRAST_COLUMNS
                                        if c not in ("p_holm", "p_bh", "p_min_adjusted", "family", "family_size")])
    table = adjust_families(table, ["comparison", "contrast", "test"], alpha)
    table["family"] = [f"layer grid of {x} vs {y}, {test}, {pairing}"
                       for x, y, test in zip(table["comparison"], table["contrast"], table["test"])]
    return table[CONTRAST_COLUMNS].reset_index(drop=True)


# ---------------------------------------------------------------- the rule's inputs (paths from the caller)


def load_comparisons(comparisons: Mapping[str, Mapping], pairs_paths: Mapping[str, Sequence[str]],
                     corr_paths: Mapping[str, Sequence[str]]) -> list[ComparisonCells]:
    """ComparisonCells from the rule's inputs: per comparison, its pairs files and (for contrasts) its
    correlation stores, both listed in the order of the cells of `comparisons[name]["cells"]`."""
    from featsim.stores import open_store

    loaded = []
    for name, spec in comparisons.items():
        cells = [tuple(cell) for cell in spec["cells"]]
        pairs = {cell: pd.read_parquet(path, columns=["a", "b"]) for cell, path in zip(cells, pairs_paths[name],
                                                                                      strict=True)}
        best = {}
        for cell, path in zip(cells, corr_paths.get(name, []), strict=False):
            corr = open_store(path, kind="correlation")  # only the two arrays needed (featsim.correlation_result)
            best[cell] = np.where(corr["used_a"][...], corr["topk_corr_for_a"][:, 0], np.nan)
        loaded.append(ComparisonCells(name, spec["a"], spec["b"], list(spec["layers_a"]), list(spec["layers_b"]),
                                      pairs, best, list(spec.get("contrast") or [])))
    return loaded


def load_concept_labels(paths: Mapping[tuple[str, int], str]) -> dict[tuple[str, int], pd.Series]:
    """(model, layer) -> latent -> concept (None when unlabelled), from `concept_labels` tables."""
    return {key: pd.read_parquet(path, columns=["latent", "concept"]).set_index("latent")["concept"]
            for key, path in paths.items()}


COLUMN_DOCS = {
    "comparison": "comparison X (config comparisons.<name>)",
    "contrast": "comparison Y that X is tested against (config comparisons.<X>.contrast)",
    "concept": "concept of A's label; empty: every concept together",
    "layer_a": "layer of the comparison's model a", "layer_b": "layer of the comparison's model b",
    "layer_b_contrast": "layer of Y's model b set against layer_b (see match)",
    "match": "how the cell of Y was chosen: same layers | by position (same number of B layers) | none",
    "test": "mcnemar (shared A side) | recall_permutation (different A sides) | did_best_corr",
    "status": "scored | not_scored (reason) | underpowered (cannot be significant after Holm: reason)",
    "reason": "why a cell was not scored",
    "n_labelled": "pairs whose A latent has the concept (any concept on the overall row)",
    "n_agree": "of those, pairs whose B latent has the same concept",
    "agreement": "concept agreement n_agree / n_labelled",
    "null_mean": "mean of the permutation null", "null_std": "standard deviation of the permutation null",
    "p": "permutation p = (b+1)/(m+1) (exact binomial for mcnemar); contrasts: one-sided 'X shows more' unless "
         "semantic.contrast_alternative is two-sided",
    "p_min": "smallest p the cell could reach (null draws at the largest attainable agreement)",
    "p_holm": "Holm-adjusted p within `family`", "p_bh": "Benjamini-Hochberg-adjusted p within `family`",
    "p_min_adjusted": "smallest attainable Holm-adjusted p in the family; >= alpha makes the cell underpowered",
    "recall": "A latents with an agreeing pair / concept-labelled A latents (paired or not)",
    "n_concept_a": "concept-labelled A latents (recall's denominator)",
    "n_agree_latents": "distinct A latents with an agreeing pair",
    "statistic": "mcnemar: latents agreeing in X only minus Y only; recall_permutation: recall X - recall Y; "
                 "did_best_corr: T = mean(r_X - r_Y | concept) - mean(r_X - r_Y | other live A latents)",
    "n": "latents tested (mcnemar: discordant latents)",
    "value_x": "mcnemar: share of A's labelled latents agreeing in X; recall: recall X; did: mean r_X - r_Y on "
               "concept latents",
    "value_y": "mcnemar: share agreeing in Y; recall: recall Y; did: mean r_X - r_Y on the other live latents",
    "n_permutations": "permutations m", "seed": "seed of this cell's permutations",
    "family": "the multiple-testing family", "family_size": "scored cells in the family",
}
