"""Pairing strategies on hand-built correlation results, against brute force and the study's rule."""

from __future__ import annotations

import itertools
import numpy as np
import pandas as pd
import pytest

from featsim.correlate import max_correlation
from featsim.correlation_result import CorrelationResult, write_correlation
from featsim.errors import ConfigError
from featsim.pairing import STRATEGIES, PairingVariant, max_weight_matching, pair, pair_variant
from featsim.parquet import read_parquet_provenance
from featsim.targets.pairing import write_pairs


def _top(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the k best columns (descending, ties to the lower index); -1/NaN where a row has no finite score."""
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    values = np.take_along_axis(scores, order, axis=1)
    finite = np.isfinite(values)
    indices, values = np.where(finite, order, -1), np.where(finite, values, np.nan)
    pad = k - indices.shape[1]  # fewer candidates than k: empty slots, as the correlation step writes them
    padding = ((0, 0), (0, pad))
    return np.pad(indices, padding, constant_values=-1), np.pad(values, padding, constant_values=np.nan)


def dense_correlation(matrix, top_k: int | None = None, excluded_a=(), excluded_b=()) -> CorrelationResult:
    """A CorrelationResult from a dense matrix C [d_a, d_b]; excluded latents get index -1 / NaN."""
    corr = np.array(matrix, dtype=np.float64)  # [d_a, d_b]
    d_a, d_b = corr.shape
    k = top_k or max(d_a, d_b)
    scores = corr.copy()
    scores[list(excluded_a), :] = -np.inf
    scores[:, list(excluded_b)] = -np.inf
    topk_a_for_b, topk_corr_for_b = _top(scores.T, k)
    topk_b_for_a, topk_corr_for_a = _top(scores, k)
    used_a, used_b = np.ones(d_a, bool), np.ones(d_b, bool)
    used_a[list(excluded_a)] = False
    used_b[list(excluded_b)] = False
    topk_a_for_b[~used_b], topk_corr_for_b[~used_b] = -1, np.nan
    topk_b_for_a[~used_a], topk_corr_for_a[~used_a] = -1, np.nan
    return CorrelationResult(
        topk_a_for_b=topk_a_for_b,
        topk_corr_for_b=topk_corr_for_b,
        topk_b_for_a=topk_b_for_a,
        topk_corr_for_a=topk_corr_for_a,
        n_active_a=np.where(used_a, 100, 0),
        mean_a=np.zeros(d_a),
        std_a=np.ones(d_a),
        n_active_b=np.where(used_b, 100, 0),
        mean_b=np.zeros(d_b),
        std_b=np.ones(d_b),
        subset_a=np.ones(d_a, bool),
        subset_b=np.ones(d_b, bool),
        used_a=used_a,
        used_b=used_b,
        n_tokens=1000,
        min_active=5,
        top_k=k,
        engine="test",
    )


def as_set(pairs) -> set[tuple[int, int]]:
    return set(zip(pairs.a.tolist(), pairs.b.tolist()))


# The worked example of reference-method §4 (rows: A latents 0..2, columns: B latents 0..5).
WORKED = np.array(
    [
        [0.08, 0.70, 0.10, 0.20, 0.30, 0.00],  # A0 top tokens: cat,  cat, dog
        [0.02, 0.10, 0.00, 0.90, 0.05, 0.30],  # A1 top tokens: ., the, a        (junk: ".")
        [-0.10, 0.20, 0.50, 0.10, 0.60, 0.95],  # A2 top tokens: red, blue
    ]
)
TOKENS_A = [["cat", " cat", "dog"], [".", "the", "a"], ["red", "blue"]]
IDS_A = [[10, 11, 12], [1, 20, 21], [30, 31]]
TOKENS_B = [["cat", "mouse"], ["dog", "cat"], ["green", "red"], ["the", "."], ["blue"], ["sun"]]
IDS_B = [[10, 13], [12, 10], [32, 30], [20, 1], [31], [40]]


def labels_frame(tokens, ids) -> pd.DataFrame:
    return pd.DataFrame(
        {"latent": range(len(tokens)), "n_active": 100, "top_token_ids": ids, "top_tokens": tokens}
    )


def test_argmax_pairs_every_b_with_its_best_a():
    pairs = pair(dense_correlation(WORKED), "argmax", min_corr=None)
    assert pairs.b.tolist() == [0, 1, 2, 3, 4, 5]
    assert pairs.a.tolist() == WORKED.argmax(axis=0).tolist() == [0, 0, 2, 1, 2, 2]
    np.testing.assert_allclose(pairs.corr, WORKED.max(axis=0))
    assert pairs.diagnostics["partners_per_a"] == {"1": 1, "2": 1, "3": 1}


def test_argmax_a_is_the_mirror():
    pairs = pair(dense_correlation(WORKED), "argmax_a", min_corr=None)
    assert sorted(zip(pairs.a.tolist(), pairs.b.tolist())) == [(0, 1), (1, 3), (2, 5)]
    mirrored = pair(dense_correlation(WORKED.T), "argmax", min_corr=None)
    assert as_set(pairs) == {(b, a) for a, b in as_set(mirrored)}


def test_one_to_one_keeps_the_highest_correlation_per_a():
    pairs = pair(dense_correlation(WORKED), "one_to_one", min_corr=None)
    # argmax pairs: A0 <- B0 (.08), B1 (.70); A1 <- B3 (.90); A2 <- B2 (.50), B4 (.60), B5 (.95)
    assert as_set(pairs) == {(0, 1), (1, 3), (2, 5)}
    assert len(np.unique(pairs.a)) == len(pairs.a)


def test_one_to_one_breaks_ties_to_the_lowest_b():
    pairs = pair(dense_correlation([[0.5, 0.5, 0.2], [0.1, 0.2, 0.3]]), "one_to_one", min_corr=None)
    assert as_set(pairs) == {(0, 0), (1, 2)}


def test_mutual_keeps_mutual_best_partners_only():
    corr = np.array([[0.9, 0.8, 0.1], [0.85, 0.2, 0.3], [0.0, 0.1, 0.2]])
    # B0 -> A0, B1 -> A0, B2 -> A1; A0 -> B0, A1 -> B0, A2 -> B2: only (A0, B0) is mutual.
    pairs = pair(dense_correlation(corr), "mutual", min_corr=None)
    assert as_set(pairs) == {(0, 0)}
    assert pairs.mutual.all()
    steps = [step["step"] for step in pairs.diagnostics["filter_counts"]]
    assert steps == ["candidates", "mutual"]


def _brute_force_best_total(weights: np.ndarray, allowed: np.ndarray) -> float:
    """Max total weight over all partial one-to-one matchings that use allowed edges only (itertools)."""
    d_a, d_b = weights.shape
    usable = np.where(allowed, weights, 0.0)
    best = 0.0
    # A latent i takes column perm[i]; columns >= d_b mean "unmatched".
    for perm in itertools.permutations(range(d_b + d_a), d_a):
        best = max(best, sum(usable[i, j] for i, j in enumerate(perm) if j < d_b))
    return best


@pytest.mark.parametrize(("seed", "d_a", "d_b"), [(0, 3, 3), (1, 4, 5), (2, 5, 3), (3, 2, 5), (4, 5, 4), (5, 4, 4)])
def test_hungarian_is_optimal_against_brute_force(seed, d_a, d_b):
    rng = np.random.default_rng(seed)
    corr = rng.uniform(-0.5, 1.0, size=(d_a, d_b))
    min_corr = 0.2
    pairs = pair(dense_correlation(corr), "hungarian", min_corr=min_corr)
    assert len(np.unique(pairs.a)) == len(pairs) == len(np.unique(pairs.b))
    assert np.all(pairs.corr > min_corr)
    np.testing.assert_allclose(pairs.corr, corr[pairs.a, pairs.b])
    assert pairs.corr.sum() == pytest.approx(_brute_force_best_total(corr, corr > min_corr), abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_hungarian_uses_only_the_top_k_candidate_graph(seed):
    rng = np.random.default_rng(100 + seed)
    corr = rng.uniform(0.0, 1.0, size=(4, 5))
    k = 2
    pairs = pair(dense_correlation(corr, top_k=k), "hungarian", min_corr=None)
    # candidate edges: each B's k best A's plus each A's k best B's
    allowed = np.zeros_like(corr, dtype=bool)
    for b in range(corr.shape[1]):
        allowed[np.argsort(-corr[:, b])[:k], b] = True
    for a in range(corr.shape[0]):
        allowed[a, np.argsort(-corr[a])[:k]] = True
    assert all(allowed[a, b] for a, b in as_set(pairs))
    assert pairs.corr.sum() == pytest.approx(_brute_force_best_total(corr, allowed & (corr > 0)), abs=1e-12)


def test_hungarian_leaves_latents_without_a_feasible_partner_unmatched():
    corr = np.array(
        [
            [0.9, 0.8, 0.05],
            [0.85, 0.1, 0.0],  # A1's only edge above 0.2 is to B0, which A0 also wants
            [0.0, -0.3, 0.1],  # A2 has no edge above 0.2
        ]
    )
    pairs = pair(dense_correlation(corr), "hungarian", min_corr=0.2)
    # greedy (A0-B0) would total 0.9; the optimum A0-B1 + A1-B0 totals 1.65
    assert as_set(pairs) == {(0, 1), (1, 0)}
    counts = {step["step"]: step["n_pairs"] for step in pairs.diagnostics["filter_counts"]}
    assert counts == {"candidates": 9, "min_corr": 3, "hungarian": 2}


def test_hungarian_requires_positive_correlation_even_without_min_corr():
    pairs = pair(dense_correlation([[-0.2, -0.1], [-0.3, 0.4]]), "hungarian", min_corr=None)
    assert as_set(pairs) == {(1, 1)}


@pytest.mark.parametrize(("seed", "d_a", "d_b", "degree"),
                         [(0, 40, 40, 3), (1, 60, 35, 2), (2, 30, 70, 4), (3, 80, 80, 1)])
def test_max_weight_matching_equals_the_dense_assignment(seed, d_a, d_b, degree):
    """Sparse random graphs (isolated nodes, latents whose every edge is contested): the same matching as
    scipy.optimize.linear_sum_assignment on the dense weights with 0 for a missing edge (a zero-weight
    assignment = unmatched). Continuous weights make the optimum unique, so the edges must agree."""
    from scipy.optimize import linear_sum_assignment

    rng = np.random.default_rng(seed)
    a = np.concatenate([rng.integers(0, d_a, d_b * degree), np.repeat(np.arange(d_a), degree)])
    b = np.concatenate([np.repeat(np.arange(d_b), degree), rng.integers(0, d_b, d_a * degree)])
    keep = rng.random(a.size) < 0.7  # some latents lose all their edges
    _, first = np.unique(a[keep] * d_b + b[keep], return_index=True)
    a, b = a[keep][first], b[keep][first]
    weight = rng.uniform(0.01, 1.0, a.size)
    chosen = max_weight_matching(a, b, weight)
    dense = np.zeros((d_a, d_b))
    dense[a, b] = weight
    rows, cols = linear_sum_assignment(dense, maximize=True)
    used = dense[rows, cols] > 0
    assert {(int(a[i]), int(b[i])) for i in chosen} == set(zip(rows[used].tolist(), cols[used].tolist()))
    assert weight[chosen].sum() == pytest.approx(dense[rows, cols].sum(), abs=1e-12)


def test_max_weight_matching_handles_an_empty_graph_and_rejects_nonpositive_weights():
    empty = np.zeros(0, dtype=np.int64)
    assert max_weight_matching(empty, empty, np.zeros(0)).size == 0
    with pytest.raises(ValueError, match="positive"):
        max_weight_matching(np.array([0]), np.array([0]), np.array([0.0]))


def test_legacy_keep_first_worked_example():
    """The study's rule (reference-method §4), step by step, junk list ["."], min_corr 0.1.

    Correlation (rows A0..A2, columns B0..B5) = WORKED; each B's best A (study's argmax direction):
        B0 -> A0 (0.08)   B1 -> A0 (0.70)   B2 -> A2 (0.50)
        B3 -> A1 (0.90)   B4 -> A2 (0.60)   B5 -> A2 (0.95)
    Top tokens: A0 {cat, " cat", dog}, A1 {., the, a}, A2 {red, blue};
                B0 {cat, mouse}, B1 {dog, cat}, B2 {green, red}, B3 {the, .}, B4 {blue}, B5 {sun}.
    Step 1 (candidates): the 6 pairs above.
    Step 2a (junk): A1 and B3 have "." among their top tokens -> drop (A1, B3): 5 pairs left.
    Step 2b (shared top token, on because a junk list is set): B5 {sun} and A2 {red, blue} share
            nothing -> drop (A2, B5): 4 pairs left: (A0,B0,.08) (A0,B1,.70) (A2,B2,.50) (A2,B4,.60).
    Step 3 (keep-first 1-1): per A the lowest surviving B index: A0 -> B0 (.08), A2 -> B2 (.50).
    Step 4 (corr > 0.1 after de-duplication): (A0, B0, .08) fails -> A0 is lost although (A0, B1)
            had 0.70 (defect B18). Result: [(A2, B2, 0.50)].
    """
    variant = PairingVariant(strategy="legacy_keep_first", min_corr=0.1, junk_tokens=(".",))
    pairs = pair_variant(
        dense_correlation(WORKED), variant, labels_frame(TOKENS_A, IDS_A), labels_frame(TOKENS_B, IDS_B)
    )
    assert list(zip(pairs.a.tolist(), pairs.b.tolist(), pairs.corr.tolist())) == [(2, 2, 0.5)]
    assert pairs.diagnostics["filter_counts"] == [
        {"step": "candidates", "n_pairs": 6},
        {"step": "junk", "n_pairs": 5},
        {"step": "shared_top_token", "n_pairs": 4},
        {"step": "keep_first", "n_pairs": 2},
        {"step": "min_corr", "n_pairs": 1},
    ]
    assert pairs.diagnostics["junk_match"] == "exact" and pairs.diagnostics["junk_top_k"] == 5
    assert pairs.diagnostics["top_junk_tokens"] == {"a": [[".", 1]], "b": [[".", 1]]}


def test_min_corr_before_dedupe_differs_from_legacy_after_dedupe():
    """Same filters, same data: one_to_one thresholds before de-duplicating, legacy after (B18)."""
    labels_a, labels_b = labels_frame(TOKENS_A, IDS_A), labels_frame(TOKENS_B, IDS_B)
    common = dict(min_corr=0.1, junk_tokens=(".",), shared_top_token=True, junk_match="exact")
    corr = dense_correlation(WORKED)
    legacy = pair_variant(corr, PairingVariant(strategy="legacy_keep_first", **common), labels_a, labels_b)
    corrected = pair_variant(corr, PairingVariant(strategy="one_to_one", **common), labels_a, labels_b)
    assert as_set(legacy) == {(2, 2)}
    assert as_set(corrected) == {(0, 1), (2, 4)}
    # Keep-first with the threshold moved before de-duplication (plain numpy) keeps A0 via B1.
    a, b, r = np.array([0, 0, 2, 2]), np.array([0, 1, 2, 4]), WORKED[[0, 0, 2, 2], [0, 1, 2, 4]]
    strong = r > 0.1
    _, first = np.unique(a[strong], return_index=True)
    assert set(zip(a[strong][first].tolist(), b[strong][first].tolist())) == {(0, 1), (2, 2)}


def _study_keep_first(best_a_for_b: list[int], surviving_b: list[int]) -> list[tuple[int, int]]:
    """The study's "1-1" loop as described in reference-method §4.3 (Counter, kept list, seen list)."""
    from collections import Counter

    counts = Counter(best_a_for_b[j] for j in surviving_b)
    kept = [a for a, n in counts.items() if n == 1]
    seen: list[int] = []
    out = []
    for j in surviving_b:
        a = best_a_for_b[j]
        if a in kept or a not in seen:
            out.append((a, j))
            seen.append(a)
    return out


@pytest.mark.parametrize("seed", range(5))
def test_legacy_keep_first_matches_the_study_loop(seed):
    rng = np.random.default_rng(seed)
    corr = rng.uniform(-0.2, 1.0, size=(6, 30))
    result = dense_correlation(corr)
    pairs = pair(result, "legacy_keep_first", min_corr=0.3)
    best = result.best_a_for_b.tolist()
    expected = [(a, j) for a, j in _study_keep_first(best, list(range(30))) if corr[a, j] > 0.3]
    assert sorted(as_set(pairs)) == sorted(expected)


def test_excluded_latents_are_never_paired():
    corr = np.array([[0.5, 0.0, 0.2], [0.1, 0.0, 0.6]])
    # B1 is dead (excluded by min_active): the study would pair it with A0 at r = 0 (B16).
    result = dense_correlation(corr, excluded_b=[1], excluded_a=[])
    for strategy in STRATEGIES:
        pairs = pair(result, strategy, min_corr=None)
        assert 1 not in pairs.b.tolist(), strategy
        assert pairs.diagnostics["n_excluded_b"] == 1 and pairs.diagnostics["n_excluded_a"] == 0


def test_junk_masks_drop_pairs_touching_junk_latents():
    result = dense_correlation(WORKED)
    junk_a = np.array([False, True, False])
    junk_b = np.array([False, False, False, False, False, True])
    for strategy in STRATEGIES:
        pairs = pair(result, strategy, min_corr=None, junk_a=junk_a, junk_b=junk_b, shared_top_token=False)
        assert 1 not in pairs.a.tolist() and 5 not in pairs.b.tolist(), strategy
    argmax = pair(result, "argmax", min_corr=None, junk_a=junk_a, junk_b=junk_b)
    assert as_set(argmax) == {(0, 0), (0, 1), (2, 2), (2, 4)}
    assert argmax.diagnostics["n_junk_latents_a"] == 1 and argmax.diagnostics["n_junk_latents_b"] == 1


def test_shared_top_token_requires_intersecting_top_tokens():
    result = dense_correlation(WORKED)
    pairs = pair(result, "argmax", min_corr=None, shared_top_token=True, top_tokens_a=IDS_A, top_tokens_b=IDS_B)
    # B3 shares "the"/"." ids with A1; B5 shares nothing with A2
    assert as_set(pairs) == {(0, 0), (0, 1), (2, 2), (2, 4), (1, 3)}
    with pytest.raises(ValueError, match="top_tokens"):
        pair(result, "argmax", shared_top_token=True)


def test_diagnostics_count_each_step_and_summarise_pairs():
    pairs = pair(dense_correlation(WORKED), "one_to_one", min_corr=0.1)
    diag = pairs.diagnostics
    assert diag["filter_counts"] == [
        {"step": "candidates", "n_pairs": 6},
        {"step": "min_corr", "n_pairs": 5},
        {"step": "one_to_one", "n_pairs": 3},
    ]
    assert diag["partners_per_a_candidates"] == {"1": 1, "2": 1, "3": 1}
    assert diag["partners_per_a"] == {"1": 3}
    assert diag["frac_unique_a"] == 1.0 and diag["n_pairs"] == 3
    assert diag["coverage_a"] == 1.0 and diag["coverage_b"] == pytest.approx(3 / 6)
    assert diag["mean_corr_candidates"] == pytest.approx(WORKED.max(axis=0).mean())
    assert diag["mean_corr_pairs"] == pytest.approx(np.mean([0.70, 0.90, 0.95]))
    assert diag["mean_best_corr_b"] == pytest.approx(WORKED.max(axis=0).mean())


def test_pairs_carry_ranks_and_mutual_flags():
    pairs = pair(dense_correlation(WORKED, top_k=2), "argmax", min_corr=None)
    frame = pairs.to_frame()
    assert list(frame.columns) == ["a", "b", "corr", "a_rank_for_b", "b_rank_for_a", "mutual"]
    assert (frame["a_rank_for_b"] == 0).all()  # argmax partners are each B's first choice
    by_b = frame.set_index("b")
    # A2's top-2 B partners are B5 (.95), B4 (.60): B2 is not listed
    assert by_b.loc[5, "b_rank_for_a"] == 0 and by_b.loc[4, "b_rank_for_a"] == 1 and by_b.loc[2, "b_rank_for_a"] == -1
    assert by_b["mutual"].to_dict() == {0: False, 1: True, 2: False, 3: True, 4: False, 5: True}


def test_no_pair_survives_gives_an_empty_result_not_an_error():
    pairs = pair(dense_correlation([[0.05, 0.01]]), "legacy_keep_first", min_corr=0.1)
    assert len(pairs) == 0 and pairs.diagnostics["mean_corr_pairs"] is None


def test_unknown_strategy_and_bad_variant_keys_name_the_config_key():
    with pytest.raises(ConfigError, match="strategy"):
        pair(dense_correlation(WORKED), "greedy")
    with pytest.raises(ConfigError, match="pairings.strict.strategy"):
        PairingVariant.from_config({"strategy": "greedy"}, key="pairings.strict")
    with pytest.raises(ConfigError, match="pairings.strict.min_cor"):
        PairingVariant.from_config({"strategy": "mutual", "min_cor": 0.1}, key="pairings.strict")
    with pytest.raises(ConfigError, match="junk_top_k"):
        PairingVariant.from_config({"strategy": "mutual", "junk_top_k": 0}, key="pairings.strict")
    variant = PairingVariant.from_config({"strategy": "mutual", "junk_tokens": [".", 7]}, key="pairings.strict")
    assert variant.junk_tokens == (".", 7) and variant.junk_file() is None


def _planted_codes(seed: int, n_tokens: int = 400):
    """Sparse codes [tokens, latents]: B latents 0..3 are noisy copies of A latents (2, 0, 3, 0); B4 is dead."""
    rng = np.random.default_rng(seed)
    codes_a = rng.exponential(1.0, size=(n_tokens, 4)) * (rng.random((n_tokens, 4)) < 0.2)
    codes_b = np.zeros((n_tokens, 5))
    for b, a in enumerate((2, 0, 3, 0)):
        codes_b[:, b] = codes_a[:, a] * (rng.random(n_tokens) < 0.8) + 0.3 * rng.exponential(1.0, n_tokens) * (
            rng.random(n_tokens) < 0.05
        )
    return codes_a, codes_b


def test_pairing_a_real_correlation_result_matches_numpy():
    import scipy.sparse as sp

    codes_a, codes_b = _planted_codes(0)
    result = max_correlation(sp.csr_matrix(codes_a), sp.csr_matrix(codes_b), top_k=5, min_active=2, device="cpu")
    dense = np.corrcoef(codes_a.T, codes_b[:, :4].T)[:4, 4:]  # [4 A, 4 live B]
    argmax = pair(result, "argmax", min_corr=None)
    assert argmax.b.tolist() == [0, 1, 2, 3]  # dead B4 is excluded, not paired with A0 (B16)
    assert argmax.a.tolist() == dense.argmax(axis=0).tolist() == [2, 0, 3, 0]
    np.testing.assert_allclose(argmax.corr, dense.max(axis=0), atol=1e-9)
    hungarian = pair(result, "hungarian", min_corr=0.0)
    assert hungarian.corr.sum() == pytest.approx(_brute_force_best_total(dense, dense > 0), abs=1e-9)
    one_to_one = pair(result, "one_to_one", min_corr=0.1)
    stronger_copy_of_a0 = (1, 3)[int(np.argmax(dense[0, [1, 3]]))]  # B1 and B3 both copy A0
    assert as_set(one_to_one) == {(2, 0), (3, 2), (0, stronger_copy_of_a0)}


def test_write_pairs_writes_parquet_and_diagnostics_with_provenance(tmp_path):
    import json

    write_correlation(tmp_path / "corr.zarr", dense_correlation(WORKED), {"config_hash": "c0ffee"})
    labels_frame(TOKENS_A, IDS_A).to_parquet(tmp_path / "a.parquet")
    labels_frame(TOKENS_B, IDS_B).to_parquet(tmp_path / "b.parquet")
    (tmp_path / "junk.yaml").write_text('- "."\n')
    variant = {"strategy": "one_to_one", "min_corr": 0.1, "junk_tokens": str(tmp_path / "junk.yaml")}
    out = tmp_path / "pairs" / "A0_B1.parquet"
    diag_path = tmp_path / "pairs" / "A0_B1.diagnostics.json"
    write_pairs(
        tmp_path / "corr.zarr", tmp_path / "a.parquet", tmp_path / "b.parquet", variant, out, diag_path,
        key="pairings.strict", ids={"comparison": "main", "layer_a": 0, "layer_b": 1},
    )
    table = pd.read_parquet(out)
    assert list(zip(table["a"], table["b"])) == [(0, 1), (2, 5)]
    provenance = read_parquet_provenance(out)
    assert provenance["comparison"] == "main" and provenance["correlation_config_hash"] == "c0ffee"
    diagnostics = json.loads(diag_path.read_text())
    assert diagnostics["provenance"] == provenance
    assert [step["step"] for step in diagnostics["filter_counts"]] == ["candidates", "junk", "min_corr", "one_to_one"]
    assert not list(tmp_path.glob("pairs/*.tmp-*"))
    with pytest.raises(ConfigError, match="pairings.strict.strategy"):
        write_pairs(
            tmp_path / "corr.zarr", tmp_path / "a.parquet", tmp_path / "b.parquet", {"strategy": "x"}, out, diag_path,
            key="pairings.strict",
        )


def test_variant_from_a_schema_filled_config_entry():
    entry = {"strategy": "legacy_keep_first", "min_corr": 0.1, "junk_tokens": [], "junk_top_k": 5,
             "shared_top_token": None, "junk_match": None}
    variant = PairingVariant.from_config(entry, key="pairings.legacy")
    pairs = pair_variant(dense_correlation(WORKED), variant)  # no junk list: no labels needed, no shared-token test
    assert as_set(pairs) == {(1, 3), (2, 2)}  # keep-first takes A0 <- B0 (.08), which min_corr then drops
    assert pairs.diagnostics["shared_top_token"] is False
    with pytest.raises(ConfigError, match="shared_top_token"):
        PairingVariant.from_config({**entry, "shared_top_token": "yes"}, key="pairings.legacy")
