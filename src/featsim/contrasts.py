"""Tests between two comparisons X and Y (config `comparisons.X.contrast: [Y, ...]`), one layer cell at a time.

- `mcnemar`: X and Y share side A (same model entry and layer): each concept-labelled A latent either has
  an agreeing pair (`featsim.concept_agreement.agreeing_latents`) or not, in X and in Y; the exact
  McNemar test is the binomial test of the discordant latents (agree in X only vs Y only).
- `recall_permutation`: A sides differ: the difference in concept recall, with a null that permutes the
  pooled per-latent outcomes between the two comparisons.
- `did_best_corr`: X and Y share side A: T = mean over concept latents of (r_X - r_Y) minus the same mean
  over the other live A latents, r = a latent's best activation correlation with the other side. A B
  side that is merely off its training distribution lowers r for every latent (T near 0); one that lacks
  the concepts lowers it on concept latents (T > 0). Null: the concept flags permuted over live latents.

Statistics are signed (positive: X has more). `alternative` (config `semantic.contrast_alternative`):
`greater` (default) tests the question a contrast states, "does X show more shared concepts than Y?"
(one-sided: a Y that shows more gives p near 1); `two-sided` tests any difference. Permutation
p = (b+1)/(m+1).
"""

from __future__ import annotations

from dataclasses import dataclass
from math import comb
from typing import Sequence

import numpy as np

BATCH_ENTRIES = 1 << 22
"""Permutations are drawn in batches of about this many entries (fixed: results never depend on memory)."""
MCNEMAR, RECALL_PERMUTATION, DID = "mcnemar", "recall_permutation", "did_best_corr"
ALTERNATIVES = ("greater", "two-sided")


@dataclass(frozen=True)
class ContrastResult:
    """One test between comparisons X and Y in one cell."""

    test: str  # MCNEMAR | RECALL_PERMUTATION | DID
    statistic: float  # signed: positive when X shows more shared concepts than Y
    n: int  # latents the test is about (discordant latents for McNemar)
    p: float  # per `alternative`
    value_x: float  # X's side of the statistic (share agreeing / recall / mean r difference on concept latents)
    value_y: float  # Y's side (share agreeing / recall / mean r difference on the other latents)
    p_min: float = float("nan")  # the smallest p the test could give on these latents
    null_mean: float = float("nan")  # permutation tests only
    null_std: float = float("nan")
    n_permutations: int = 0


def binomial_two_sided(successes: int, trials: int) -> float:
    """Exact two-sided p of `successes` in `trials` Bernoulli(1/2) draws: 2 P(X <= min(k, n-k)), at most 1."""
    if trials == 0:
        return 1.0
    tail = sum(comb(trials, k) for k in range(min(successes, trials - successes) + 1))
    return min(1.0, 2 * tail / 2**trials)


def binomial_greater(successes: int, trials: int) -> float:
    """Exact one-sided p of `successes` or more in `trials` Bernoulli(1/2) draws."""
    if trials == 0:
        return 1.0
    return sum(comb(trials, k) for k in range(successes, trials + 1)) / 2**trials


def check_alternative(alternative: str) -> str:
    """The alternative, or an error naming the config key."""
    if alternative not in ALTERNATIVES:
        raise ValueError(f"config key 'semantic.contrast_alternative': {alternative!r} is not one of {ALTERNATIVES}")
    return alternative


def mcnemar_exact(agree_x, agree_y, alternative: str = "greater") -> ContrastResult:
    """Exact McNemar test on paired binary outcomes (one entry per latent, same latents in both).

    statistic = n_xy' - n_x'y: latents agreeing in X only minus those agreeing in Y only; n = discordant latents.
    """
    agree_x = np.asarray(agree_x, dtype=bool)
    agree_y = np.asarray(agree_y, dtype=bool)
    if agree_x.shape != agree_y.shape:
        raise ValueError(f"McNemar needs the same latents in both comparisons, got {agree_x.size} and {agree_y.size}")
    x_only = int(np.count_nonzero(agree_x & ~agree_y))
    y_only = int(np.count_nonzero(~agree_x & agree_y))
    share = (lambda v: float(v.mean()) if v.size else float("nan"))
    n = x_only + y_only
    if check_alternative(alternative) == "greater":
        p, p_min = binomial_greater(x_only, n), binomial_greater(n, n)
    else:
        p, p_min = binomial_two_sided(x_only, n), binomial_two_sided(0, n)
    return ContrastResult(MCNEMAR, float(x_only - y_only), n, p, share(agree_x), share(agree_y), p_min=p_min)


def _permutation_p(null: np.ndarray, observed: float, n_permutations: int, alternative: str) -> float:
    """(b+1)/(m+1), b = null draws at least as large as observed (`greater`) or at least as far from 0
    (`two-sided`), with a relative 1e-9 tolerance for float ties."""
    tolerance = 1e-9 * max(1.0, abs(observed))
    if check_alternative(alternative) == "greater":
        exceed = np.count_nonzero(null >= observed - tolerance)
    else:
        exceed = np.count_nonzero(np.abs(null) >= abs(observed) - tolerance)
    return float((exceed + 1) / (n_permutations + 1))


def _p_floor(null: np.ndarray, n_permutations: int, alternative: str) -> float:
    """The smallest p reachable: an observed value at the most extreme null draw."""
    extreme = null.max() if alternative == "greater" else np.abs(null).max()
    return _permutation_p(null, float(extreme), n_permutations, alternative)


def _permuted_flags(flags: np.ndarray, n_permutations: int, rng: np.random.Generator):
    """Yield [batch, n] float arrays of `flags` permuted along each row."""
    n = flags.size
    batch = max(1, BATCH_ENTRIES // max(n, 1))
    for start in range(0, n_permutations, batch):
        permuted = np.tile(flags.astype(np.float64), (min(batch, n_permutations - start), 1))
        rng.permuted(permuted, axis=1, out=permuted)
        yield permuted


def recall_difference_test(agree_x, agree_y, *, n_permutations: int = 10000, seed: int = 0,
                           alternative: str = "greater") -> ContrastResult:
    """Permutation test of recall_X - recall_Y on independent latent sets (per-latent agreement outcomes)."""
    agree_x = np.asarray(agree_x, dtype=bool)
    agree_y = np.asarray(agree_y, dtype=bool)
    n_x, n_y = agree_x.size, agree_y.size
    if n_x == 0 or n_y == 0:
        return ContrastResult(RECALL_PERMUTATION, float("nan"), n_x + n_y, float("nan"), float("nan"), float("nan"))
    observed = agree_x.mean() - agree_y.mean()
    pooled = np.concatenate([agree_x, agree_y])
    group_x = np.zeros(pooled.size, dtype=bool)
    group_x[:n_x] = True
    total = pooled.sum()
    null = np.concatenate([(permuted @ pooled) for permuted in
                           _permuted_flags(group_x, n_permutations, np.random.default_rng(seed))])
    null = null / n_x - (total - null) / n_y
    return ContrastResult(RECALL_PERMUTATION, float(observed), n_x + n_y,
                          _permutation_p(null, observed, n_permutations, alternative),
                          float(agree_x.mean()), float(agree_y.mean()), _p_floor(null, n_permutations, alternative),
                          float(null.mean()), float(null.std()), n_permutations)


def difference_in_differences(r_x, r_y, is_concept, *, n_permutations: int = 10000, seed: int = 0,
                              alternative: str = "greater") -> ContrastResult:
    """T = mean(r_x - r_y | concept) - mean(r_x - r_y | not concept) over live latents; concept flags permuted.

    `r_x`, `r_y`: each A latent's best correlation in comparison X and Y; latents with a non-finite value
    in either (not live in both) are left out. value_x / value_y are the two means.
    """
    r_x = np.asarray(r_x, dtype=np.float64)
    r_y = np.asarray(r_y, dtype=np.float64)
    is_concept = np.asarray(is_concept, dtype=bool)
    if not r_x.shape == r_y.shape == is_concept.shape:
        raise ValueError(f"r_x, r_y and is_concept need one entry per latent, got {r_x.size}, {r_y.size}, "
                         f"{is_concept.size}")
    live = np.isfinite(r_x) & np.isfinite(r_y)
    difference = (r_x - r_y)[live]
    concept = is_concept[live]
    n_concept, n_other = int(concept.sum()), int((~concept).sum())
    if n_concept == 0 or n_other == 0:
        return ContrastResult(DID, float("nan"), int(live.sum()), float("nan"), float("nan"), float("nan"))
    mean_concept, mean_other = difference[concept].mean(), difference[~concept].mean()
    observed = mean_concept - mean_other
    total = difference.sum()
    sums = np.concatenate([(permuted @ difference) for permuted in
                           _permuted_flags(concept, n_permutations, np.random.default_rng(seed))])
    null = sums / n_concept - (total - sums) / n_other
    return ContrastResult(DID, float(observed), int(live.sum()), _permutation_p(null, observed, n_permutations,
                                                                                 alternative),
                          float(mean_concept), float(mean_other), _p_floor(null, n_permutations, alternative),
                          float(null.mean()),
                          float(null.std()), n_permutations)


@dataclass(frozen=True)
class CellMatch:
    """Which cell of comparison Y is set against cell (layer_a, layer_b) of X, or why none is."""

    layer_a: int
    layer_b: int
    layer_b_y: int | None
    match: str  # "same layers" | "by position" | "none"
    reason: str = ""


def match_cells(layers_a_x: Sequence[int], layers_b_x: Sequence[int], layers_a_y: Sequence[int],
                layers_b_y: Sequence[int]) -> list[CellMatch]:
    """Pair the layer cells of X with those of Y: the same (layer_a, layer_b) when Y has it; else, when
    both B sides list as many layers, the B layer at the same position (e.g. relative depth of two
    models of different depth); else none, with the reason. A layers are never matched by position: a
    test between comparisons needs the same A latents (or at least the same A layer)."""
    matches = []
    for layer_a in layers_a_x:
        for position, layer_b in enumerate(layers_b_x):
            if layer_a not in layers_a_y:
                matches.append(CellMatch(layer_a, layer_b, None, "none", f"layer_a {layer_a} is not in the contrast"))
            elif layer_b in layers_b_y:
                matches.append(CellMatch(layer_a, layer_b, layer_b, "same layers"))
            elif len(layers_b_x) == len(layers_b_y):
                matches.append(CellMatch(layer_a, layer_b, list(layers_b_y)[position], "by position"))
            else:
                matches.append(CellMatch(layer_a, layer_b, None, "none",
                                         f"layer_b {layer_b} is not in the contrast's B layers {list(layers_b_y)} "
                                         f"and the two B sides list different numbers of layers"))
    return matches
