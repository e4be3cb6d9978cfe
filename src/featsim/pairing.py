"""Pair latents of SAE A with latents of SAE B from a correlation result, by a named strategy.

Strategies (registry `STRATEGIES`, chosen by name):
- `argmax`: each B latent with its best A latent (many-to-1); `argmax_a`: each A latent with its best B.
- `one_to_one`: the `argmax` pairs, then per A latent only the pair with the highest correlation.
- `mutual`: pairs that are each other's best partner.
- `hungarian`: maximum-total-correlation one-to-one matching on the sparse top-k candidate graph.
- `legacy_keep_first`: the original study's rule, filter order and threshold placement (reference-method §4).

Filters (featsim.filters) run in this order: junk latents -> shared top token -> `min_corr` -> the
strategy's de-duplication; `legacy_keep_first` de-duplicates before `min_corr`, as the study did (B18).
A filter drops pairs; it never re-routes a latent to its next-best partner (except in `hungarian`, where
filters remove candidate edges before the matching is solved). Latents the correlation step excluded
(fewer than `correlation.min_active` firings, partner index -1) are never paired.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from featsim.errors import ConfigError, reject_unknown_keys
from featsim.filters import (
    JUNK_MATCH_MODES,
    JunkFlags,
    above_min_corr,
    excluded_latents,
    junk_flags,
    labels_by_latent,
    load_junk_tokens,
    shares_top_token,
    top_token_sets,
)

N_TOP_JUNK_TOKENS = 20


@dataclass(frozen=True)
class Pairs:
    """Paired latents: row i pairs A latent `a[i]` with B latent `b[i]` at correlation `corr[i]`, sorted by (b, a)."""

    a: np.ndarray  # int64 [n_pairs]
    b: np.ndarray  # int64 [n_pairs]
    corr: np.ndarray  # float64 [n_pairs]
    diagnostics: dict
    a_rank_for_b: np.ndarray  # int64 [n_pairs]: position of a among b's top-k A partners (0 = best, -1 = not listed)
    b_rank_for_a: np.ndarray  # int64 [n_pairs]: position of b among a's top-k B partners
    mutual: np.ndarray  # bool [n_pairs]: a and b are each other's best partner

    def __len__(self) -> int:
        return len(self.a)

    def to_frame(self):
        """The pairs table written to `pairs/.../A{la}_B{lb}.parquet`."""
        import pandas as pd

        return pd.DataFrame(
            {
                "a": self.a,
                "b": self.b,
                "corr": self.corr,
                "a_rank_for_b": self.a_rank_for_b,
                "b_rank_for_a": self.b_rank_for_a,
                "mutual": self.mutual,
            }
        )


@dataclass(frozen=True)
class _Candidates:
    """Candidate pairs flowing through the filters."""

    a: np.ndarray  # int64 [n]
    b: np.ndarray  # int64 [n]
    corr: np.ndarray  # float64 [n]

    def take(self, keep: np.ndarray) -> "_Candidates":
        return _Candidates(self.a[keep], self.b[keep], self.corr[keep])

    def __len__(self) -> int:
        return len(self.a)


@dataclass
class _Run:
    """What a strategy needs (correlation fields, filter settings) and what it records (step counts)."""

    best_a_for_b: np.ndarray  # int64 [d_b]
    best_corr_for_b: np.ndarray  # float64 [d_b]
    best_b_for_a: np.ndarray  # int64 [d_a]
    best_corr_for_a: np.ndarray  # float64 [d_a]
    topk_a_for_b: np.ndarray  # int64 [d_b, k]
    topk_corr_for_b: np.ndarray  # float64 [d_b, k]
    topk_b_for_a: np.ndarray  # int64 [d_a, k]
    topk_corr_for_a: np.ndarray  # float64 [d_a, k]
    eligible_a: np.ndarray  # bool [d_a]: took part in the correlation (in the subset, >= min_active firings)
    eligible_b: np.ndarray  # bool [d_b]
    excluded_a: np.ndarray  # bool [d_a]: in the subset but excluded by the correlation step (min_active)
    excluded_b: np.ndarray  # bool [d_b]
    min_corr: float | None
    junk_a: JunkFlags | None
    junk_b: JunkFlags | None
    top_sets_a: list[frozenset] | None
    top_sets_b: list[frozenset] | None
    shared_top_token: bool
    steps: list[dict] = field(default_factory=list)
    candidates: _Candidates | None = None
    junk_removed_a: np.ndarray | None = None  # A latents of pairs the junk filter dropped
    junk_removed_b: np.ndarray | None = None

    def record(self, step: str, pairs: _Candidates) -> _Candidates:
        self.steps.append({"step": step, "n_pairs": int(len(pairs))})
        return pairs

    def start(self, step: str, pairs: _Candidates) -> _Candidates:
        self.candidates = pairs
        return self.record(step, pairs)

    # Filters, each recorded as a step. ------------------------------------------------------------
    def drop_junk(self, pairs: _Candidates) -> _Candidates:
        if self.junk_a is None and self.junk_b is None:
            return pairs
        junk = np.zeros(len(pairs), dtype=bool)
        if self.junk_a is not None:
            junk |= self.junk_a.mask[pairs.a]
        if self.junk_b is not None:
            junk |= self.junk_b.mask[pairs.b]
        self.junk_removed_a = np.unique(pairs.a[junk])
        self.junk_removed_b = np.unique(pairs.b[junk])
        return self.record("junk", pairs.take(~junk))

    def require_shared_top_token(self, pairs: _Candidates) -> _Candidates:
        if not self.shared_top_token:
            return pairs
        shared = shares_top_token(pairs.a, pairs.b, self.top_sets_a, self.top_sets_b)
        return self.record("shared_top_token", pairs.take(shared))

    def threshold(self, pairs: _Candidates, floor: float | None = None) -> _Candidates:
        limits = [limit for limit in (self.min_corr, floor) if limit is not None]
        if not limits:
            return pairs
        return self.record("min_corr", pairs.take(above_min_corr(pairs.corr, max(limits))))

    def filters(self, pairs: _Candidates) -> _Candidates:
        """junk -> shared top token -> min_corr."""
        return self.threshold(self.require_shared_top_token(self.drop_junk(pairs)))


# Candidate sets. ----------------------------------------------------------------------------------
def _best_partner_pairs(run: _Run) -> _Candidates:
    """(best A, b) for every non-excluded B latent."""
    b = np.flatnonzero(~excluded_latents(run.best_a_for_b) & np.isfinite(run.best_corr_for_b))
    return _Candidates(run.best_a_for_b[b], b, run.best_corr_for_b[b])


def _best_partner_pairs_of_a(run: _Run) -> _Candidates:
    """(a, best B) for every non-excluded A latent."""
    a = np.flatnonzero(~excluded_latents(run.best_b_for_a) & np.isfinite(run.best_corr_for_a))
    return _Candidates(a, run.best_b_for_a[a], run.best_corr_for_a[a])


def _is_mutual(run: _Run, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (run.best_b_for_a[a] == b) & (run.best_a_for_b[b] == a)


def _topk_edges(run: _Run) -> _Candidates:
    """The union of both directions' top-k lists as unique (a, b) edges with their correlation."""
    d_b, k_b = run.topk_a_for_b.shape
    d_a, k_a = run.topk_b_for_a.shape
    a = np.concatenate([run.topk_a_for_b.ravel(), np.repeat(np.arange(d_a), k_a)])
    b = np.concatenate([np.repeat(np.arange(d_b), k_b), run.topk_b_for_a.ravel()])
    corr = np.concatenate([run.topk_corr_for_b.ravel(), run.topk_corr_for_a.ravel()])
    valid = (a >= 0) & (b >= 0) & np.isfinite(corr)
    a, b, corr = a[valid], b[valid], corr[valid]
    # Both directions list the same Pearson value for a shared edge; keep the larger copy if they differ by rounding.
    order = np.lexsort((-corr, b, a))
    a, b, corr = a[order], b[order], corr[order]
    first = np.ones(len(a), dtype=bool)
    first[1:] = (a[1:] != a[:-1]) | (b[1:] != b[:-1])
    return _Candidates(a[first], b[first], corr[first])


# De-duplication and matching. ---------------------------------------------------------------------
def _keep_highest_per_a(pairs: _Candidates) -> _Candidates:
    """Per A latent the pair with the highest correlation (ties: lowest B index)."""
    order = np.lexsort((pairs.b, -pairs.corr, pairs.a))
    _, first = np.unique(pairs.a[order], return_index=True)
    return pairs.take(order[first])


def _keep_first_per_a(pairs: _Candidates) -> _Candidates:
    """Per A latent the pair with the lowest B index (the study's keep-first "1-1" rule, B17)."""
    order = np.lexsort((pairs.b, pairs.a))
    _, first = np.unique(pairs.a[order], return_index=True)
    return pairs.take(order[first])


def max_weight_matching(a: np.ndarray, b: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Indices of the edges (a[i], b[i]) in a maximum-total-weight matching (each node used at most once).

    Solved exactly as a square min-cost perfect matching with scipy's sparse LAPJVsp
    (`min_weight_full_bipartite_matching`), on the doubled graph whose rows are A and a copy B' of B
    and whose columns are B and a copy A' of A: a real edge (a, b) and its mirror (b', a') cost
    offset - w/2 each, and the "unmatched" edges (a, a') and (b', b) cost offset. Every node can stay
    unmatched, so a perfect matching always exists, and a perfect matching costs
    (n_a + n_b) * offset - (total weight of the real edges it uses): its optimum is a maximum-weight
    matching. Square, so LAPJVsp runs its column reduction and augmenting row reduction (scipy skips
    them for rectangular graphs): 4.8 s instead of 21 s CPU for 32,768 x 32,768 latents, top-k 8 edges.
    The offset keeps every cost non-zero, as scipy requires; costs are float64, so totals closer than
    ~1e-15 relative are ties. Only nodes touched by an edge enter the graph. Weights must be positive;
    edges must be distinct (a, b) pairs.
    """
    from scipy.sparse import coo_array
    from scipy.sparse.csgraph import min_weight_full_bipartite_matching

    if len(a) == 0:
        return np.zeros(0, dtype=np.int64)
    if np.any(weight <= 0) or not np.all(np.isfinite(weight)):
        raise ValueError("max_weight_matching needs finite positive edge weights")
    _, node_a = np.unique(a, return_inverse=True)
    _, node_b = np.unique(b, return_inverse=True)
    n_a, n_b = int(node_a.max()) + 1, int(node_b.max()) + 1
    weight = weight.astype(np.float64)
    offset = float(weight.max()) + 1.0
    half = offset - weight / 2.0
    rows = np.concatenate([node_a, n_a + node_b, np.arange(n_a), n_a + np.arange(n_b)])
    cols = np.concatenate([node_b, n_b + node_a, n_b + np.arange(n_a), np.arange(n_b)])
    costs = np.concatenate([half, half, np.full(n_a + n_b, offset)])
    graph = coo_array((costs, (rows, cols)), shape=(n_a + n_b, n_a + n_b)).tocsr()
    matched_rows, matched_cols = min_weight_full_bipartite_matching(graph)
    real = (matched_rows < n_a) & (matched_cols < n_b)
    keys = node_a.astype(np.int64) * n_b + node_b
    order = np.argsort(keys, kind="stable")
    chosen = order[np.searchsorted(keys[order], matched_rows[real].astype(np.int64) * n_b + matched_cols[real])]
    return np.sort(chosen).astype(np.int64)


# Strategies. ---------------------------------------------------------------------------------------
def _argmax(run: _Run) -> _Candidates:
    """Each B latent with its best A latent, then the filters; many B latents may share one A latent.

    With `junk_match: exact`, `shared_top_token: true` and `min_corr: 0.1` this is the study's many-to-1
    run (its threshold placement does not matter without de-duplication).
    """
    return run.filters(run.start("candidates", _best_partner_pairs(run)))


def _argmax_a(run: _Run) -> _Candidates:
    """Each A latent with its best B latent, then the filters (the study's `manyA_1B_bool=False`)."""
    return run.filters(run.start("candidates", _best_partner_pairs_of_a(run)))


def _one_to_one(run: _Run) -> _Candidates:
    """The filtered `argmax` pairs, then per A latent only its highest-correlation pair (corrects B17/B18)."""
    pairs = run.filters(run.start("candidates", _best_partner_pairs(run)))
    return run.record("one_to_one", _keep_highest_per_a(pairs))


def _mutual(run: _Run) -> _Candidates:
    """Pairs whose two latents are each other's best partner, then the filters."""
    pairs = run.start("candidates", _best_partner_pairs(run))
    pairs = run.record("mutual", pairs.take(_is_mutual(run, pairs.a, pairs.b)))
    return run.filters(pairs)


def _hungarian(run: _Run) -> _Candidates:
    """Maximum-total-correlation one-to-one matching on the top-k candidate graph.

    Candidate edges are the union of both directions' top-k lists (`correlation.top_k`): a pair outside
    both lists is never considered. The filters remove edges (junk latents, no shared top token,
    correlation <= max(min_corr, 0)) before matching. Latents left with no edge, and latents whose
    every candidate is taken by a better-scoring assignment, stay unpaired: the matching is not forced
    to be full. Measured: 4.8 s CPU for 32,768 x 32,768 latents, top_k 8, random graph (2-core CPU;
    benchmarks/pairing.py).
    """
    edges = run.start("candidates", _topk_edges(run))
    edges = run.require_shared_top_token(run.drop_junk(edges))
    edges = run.threshold(edges, floor=0.0)  # positive correlations only: the matching maximises their sum
    return run.record("hungarian", edges.take(max_weight_matching(edges.a, edges.b, edges.corr)))


def _legacy_keep_first(run: _Run) -> _Candidates:
    """The study's rule (reference-method §4): argmax B->A -> junk + shared top token -> keep-first -> min_corr.

    Keep-first keeps, per distinct A latent, the surviving pair with the lowest B index (not the best
    one, B17); the threshold comes after that (B18). The study paired dead B latents with A latent 0 at
    r = 0 (B16), where one could take A0's keep-first slot before the threshold dropped it; featsim's
    correlation step excludes latents below `min_active`, so that effect cannot occur here.
    """
    pairs = run.start("candidates", _best_partner_pairs(run))
    pairs = run.require_shared_top_token(run.drop_junk(pairs))
    pairs = run.record("keep_first", _keep_first_per_a(pairs))
    return run.threshold(pairs)


@dataclass(frozen=True)
class Strategy:
    """A pairing strategy and the filter defaults it implies when a variant leaves them unset (null)."""

    run: Callable[[_Run], _Candidates]
    summary: str
    shared_top_token_default: Callable[[bool], bool] = lambda has_junk_list: False
    junk_match_default: str = "normalised"
    junk_top_k_default: int | None = None  # None: every top token the labels file stores


STRATEGIES: dict[str, Strategy] = {
    "argmax": Strategy(_argmax, "each B latent with its best A latent (many-to-1)"),
    "argmax_a": Strategy(_argmax_a, "each A latent with its best B latent (1-to-many)"),
    "one_to_one": Strategy(_one_to_one, "argmax pairs, then per A latent the highest-correlation pair"),
    "mutual": Strategy(_mutual, "mutual best partners"),
    "hungarian": Strategy(_hungarian, "maximum-total-correlation matching on the top-k candidate graph"),
    # The study applies its shared-token test whenever a junk list is set, compares raw decoded strings
    # and looks at 5 top tokens per latent (reference-method §4.1-4.2).
    "legacy_keep_first": Strategy(
        _legacy_keep_first,
        "the original study's rule: junk+shared-token filter, keep-first per A latent, then corr > min_corr",
        shared_top_token_default=lambda has_junk_list: has_junk_list,
        junk_match_default="exact",
        junk_top_k_default=5,
    ),
}


def _strategy(name: str, key: str = "strategy") -> Strategy:
    try:
        return STRATEGIES[name]
    except KeyError:
        raise ConfigError(key, f"unknown pairing strategy {name!r} (have: {', '.join(STRATEGIES)})") from None


def _as_junk_flags(junk: np.ndarray | JunkFlags | None, d_sae: int, side: str) -> JunkFlags | None:
    if junk is None:
        return None
    flags = junk if isinstance(junk, JunkFlags) else JunkFlags(np.asarray(junk, dtype=bool), ((),) * d_sae)
    if flags.mask.shape != (d_sae,):
        raise ValueError(f"junk_{side} has shape {flags.mask.shape}; expected one flag per latent ({d_sae},)")
    return flags


def _field(corr: Any, name: str, dtype) -> np.ndarray:
    return np.asarray(getattr(corr, name)[...], dtype=dtype)


def _eligible_and_excluded(corr: Any, side: str, best_partner: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Latents that took part in the correlation, and those its min_active rule excluded.

    Uses `used_*`/`subset_*` of a `featsim.correlation_result.CorrelationResult`; without them (a hand-built
    result) a partner index of -1 marks an excluded latent.
    """
    if hasattr(corr, f"used_{side}"):
        used = _field(corr, f"used_{side}", bool)
        subset = _field(corr, f"subset_{side}", bool) if hasattr(corr, f"subset_{side}") else np.ones_like(used)
        return used, subset & ~used
    excluded = excluded_latents(best_partner)
    return ~excluded, excluded


def pair(
    corr: Any,
    strategy: str = "one_to_one",
    *,
    min_corr: float | None = 0.1,
    junk_a: np.ndarray | JunkFlags | None = None,
    junk_b: np.ndarray | JunkFlags | None = None,
    shared_top_token: bool | None = None,
    top_tokens_a: Sequence[Sequence[int | str]] | None = None,
    top_tokens_b: Sequence[Sequence[int | str]] | None = None,
) -> Pairs:
    """Pair the latents of a correlation result (`featsim.correlation_result.CorrelationResult`) by `strategy`.

    `min_corr`: keep pairs with correlation strictly above it (None: no threshold; `hungarian` always
    requires > 0). `junk_a`/`junk_b`: bool [d_sae] masks (or `JunkFlags`, which also lets the
    diagnostics name the junk tokens); pairs touching a junk latent are dropped. `shared_top_token`
    (None: the strategy's default) keeps only pairs whose `top_tokens_a[a]` and `top_tokens_b[b]`
    (per-latent token ids or texts) intersect.
    """
    chosen = _strategy(strategy)
    best_a_for_b = _field(corr, "best_a_for_b", np.int64)
    best_b_for_a = _field(corr, "best_b_for_a", np.int64)
    d_a, d_b = len(best_b_for_a), len(best_a_for_b)
    junk_flags_a = _as_junk_flags(junk_a, d_a, "a")
    junk_flags_b = _as_junk_flags(junk_b, d_b, "b")
    if shared_top_token is None:
        shared_top_token = chosen.shared_top_token_default(junk_flags_a is not None or junk_flags_b is not None)
    if shared_top_token and (top_tokens_a is None or top_tokens_b is None):
        raise ValueError("shared_top_token needs top_tokens_a and top_tokens_b (per-latent top token ids or texts)")
    top_sets_a = top_sets_b = None
    if shared_top_token:
        top_sets_a, top_sets_b = top_token_sets(top_tokens_a), top_token_sets(top_tokens_b)
        if len(top_sets_a) != d_a or len(top_sets_b) != d_b:
            raise ValueError(
                f"top_tokens_a/b cover {len(top_sets_a)}/{len(top_sets_b)} latents; the correlation has {d_a}/{d_b}"
            )
    eligible_a, excluded_a = _eligible_and_excluded(corr, "a", best_b_for_a)
    eligible_b, excluded_b = _eligible_and_excluded(corr, "b", best_a_for_b)
    run = _Run(
        eligible_a=eligible_a,
        eligible_b=eligible_b,
        excluded_a=excluded_a,
        excluded_b=excluded_b,
        best_a_for_b=best_a_for_b,
        best_corr_for_b=_field(corr, "best_corr_for_b", np.float64),
        best_b_for_a=best_b_for_a,
        best_corr_for_a=_field(corr, "best_corr_for_a", np.float64),
        topk_a_for_b=_field(corr, "topk_a_for_b", np.int64),
        topk_corr_for_b=_field(corr, "topk_corr_for_b", np.float64),
        topk_b_for_a=_field(corr, "topk_b_for_a", np.int64),
        topk_corr_for_a=_field(corr, "topk_corr_for_a", np.float64),
        min_corr=None if min_corr is None else float(min_corr),
        junk_a=junk_flags_a,
        junk_b=junk_flags_b,
        top_sets_a=top_sets_a,
        top_sets_b=top_sets_b,
        shared_top_token=bool(shared_top_token),
    )
    result = chosen.run(run)
    order = np.lexsort((result.a, result.b))
    result = result.take(order)
    diagnostics = _diagnostics(run, result, strategy)
    return Pairs(
        a=result.a,
        b=result.b,
        corr=result.corr,
        diagnostics=diagnostics,
        a_rank_for_b=_rank_in(run.topk_a_for_b, result.b, result.a),
        b_rank_for_a=_rank_in(run.topk_b_for_a, result.a, result.b),
        mutual=_is_mutual(run, result.a, result.b),
    )


def _rank_in(topk: np.ndarray, owner: np.ndarray, partner: np.ndarray) -> np.ndarray:
    """Position of partner[i] in topk[owner[i]] (-1 where it is not listed)."""
    if len(owner) == 0:
        return np.zeros(0, dtype=np.int64)
    hit = topk[owner] == partner[:, None]
    return np.where(hit.any(axis=1), hit.argmax(axis=1), -1).astype(np.int64)


def _histogram(latents: np.ndarray) -> dict[str, int]:
    """{number of partners: number of latents with that many} for the latents listed (with repeats)."""
    per_latent = Counter(np.unique(latents, return_counts=True)[1].tolist())
    return {str(n_partners): int(count) for n_partners, count in sorted(per_latent.items())}


def _finite(values: np.ndarray) -> np.ndarray:
    return values[np.isfinite(values)]


def _mean(values: np.ndarray) -> float | None:
    return float(np.mean(values)) if len(values) else None


def _top_junk_tokens(run: _Run) -> dict[str, list[list]]:
    out = {}
    for side, flags, removed in (("a", run.junk_a, run.junk_removed_a), ("b", run.junk_b, run.junk_removed_b)):
        if flags is not None and removed is not None:
            junk_removed = removed[flags.mask[removed]]
            out[side] = [[token, count] for token, count in flags.most_common(junk_removed, N_TOP_JUNK_TOKENS)]
    return out


def _diagnostics(run: _Run, result: _Candidates, strategy: str) -> dict:
    excluded_a, excluded_b = run.excluded_a, run.excluded_b
    d_a, d_b = len(excluded_a), len(excluded_b)
    n_pairs = len(result)
    n_unique_a, n_unique_b = len(np.unique(result.a)), len(np.unique(result.b))
    candidates = run.candidates
    return {
        "strategy": strategy,
        "min_corr": run.min_corr,
        "shared_top_token": run.shared_top_token,
        "d_a": d_a,
        "d_b": d_b,
        "n_excluded_a": int(excluded_a.sum()),  # fewer than correlation.min_active firings: never paired
        "n_excluded_b": int(excluded_b.sum()),
        "n_junk_latents_a": None if run.junk_a is None else int((run.junk_a.mask & run.eligible_a).sum()),
        "n_junk_latents_b": None if run.junk_b is None else int((run.junk_b.mask & run.eligible_b).sum()),
        "filter_counts": run.steps,  # candidate pairs (hungarian: candidate edges) left after each step, in order
        "n_pairs": n_pairs,
        "n_unique_a": n_unique_a,
        "n_unique_b": n_unique_b,
        "frac_unique_a": n_unique_a / n_pairs if n_pairs else None,  # 1.0 for a one-to-one pairing
        "frac_unique_b": n_unique_b / n_pairs if n_pairs else None,
        "coverage_a": n_unique_a / max(int(run.eligible_a.sum()), 1),  # share of correlated A latents paired
        "coverage_b": n_unique_b / max(int(run.eligible_b.sum()), 1),
        "partners_per_a": _histogram(result.a),  # many-to-1: {n B partners: n A latents}
        "partners_per_b": _histogram(result.b),
        "partners_per_a_candidates": _histogram(candidates.a) if candidates is not None else {},
        # the study's mean_actv_corr, without the dead latents it counted as 0
        "mean_best_corr_b": _mean(_finite(run.best_corr_for_b[run.eligible_b])),
        "mean_best_corr_a": _mean(_finite(run.best_corr_for_a[run.eligible_a])),
        "mean_corr_candidates": _mean(candidates.corr) if candidates is not None else None,
        "mean_corr_pairs": _mean(result.corr),
        "top_junk_tokens": _top_junk_tokens(run),  # per side: [normalised token, n junk latents dropped with it]
    }


# Named variants from config. -----------------------------------------------------------------------
@dataclass(frozen=True)
class PairingVariant:
    """One entry of `pairings:` in the config; None fields take the strategy's default (see STRATEGIES)."""

    strategy: str
    min_corr: float | None = 0.1
    junk_tokens: str | tuple[str | int, ...] | None = ()  # inline list or path to a .txt/.yaml file
    shared_top_token: bool | None = None
    junk_top_k: int | None = 5  # None: the strategy's default
    junk_match: str | None = None

    @classmethod
    def from_config(cls, entry: Mapping[str, Any], key: str = "pairings.<variant>") -> "PairingVariant":
        """Build from a config mapping; errors name `key` and the offending field."""
        reject_unknown_keys(dict(entry), {f.name for f in fields(cls)}, key)
        if "strategy" not in entry:
            raise ConfigError(f"{key}.strategy", f"required (one of: {', '.join(STRATEGIES)})")
        _strategy(entry["strategy"], f"{key}.strategy")
        values = dict(entry)
        if isinstance(values.get("junk_tokens"), list):
            values["junk_tokens"] = tuple(values["junk_tokens"])
        variant = cls(**values)
        if variant.min_corr is not None and not isinstance(variant.min_corr, (int, float)):
            raise ConfigError(f"{key}.min_corr", f"must be a number or null, got {variant.min_corr!r}")
        top_k = variant.junk_top_k
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
            raise ConfigError(f"{key}.junk_top_k", f"must be a positive integer or null, got {top_k!r}")
        if variant.shared_top_token is not None and not isinstance(variant.shared_top_token, bool):
            raise ConfigError(
                f"{key}.shared_top_token", f"must be true, false or null, got {variant.shared_top_token!r}"
            )
        if variant.junk_match is not None and variant.junk_match not in JUNK_MATCH_MODES:
            raise ConfigError(f"{key}.junk_match", f"{variant.junk_match!r} is not one of {list(JUNK_MATCH_MODES)}")
        return variant

    def junk_file(self) -> str | None:
        """The junk-token file this variant reads (a rule input, so editing it triggers a rebuild)."""
        return self.junk_tokens if isinstance(self.junk_tokens, str) else None


def pair_variant(
    corr: Any, variant: PairingVariant, labels_a=None, labels_b=None, key: str = "pairings.<variant>"
) -> Pairs:
    """Run a named variant: read its junk list, flag junk latents from the labels tables, pair.

    `labels_a`/`labels_b`: labels DataFrames (columns `latent`, `top_tokens`, `top_token_ids`), needed
    when the variant has a junk list or requires a shared top token.
    """
    chosen = _strategy(variant.strategy, f"{key}.strategy")
    junk = load_junk_tokens(variant.junk_tokens, key=f"{key}.junk_tokens")
    shared = variant.shared_top_token
    if shared is None:
        shared = chosen.shared_top_token_default(bool(junk))
    match = variant.junk_match or chosen.junk_match_default
    top_k = variant.junk_top_k if variant.junk_top_k is not None else chosen.junk_top_k_default
    junk_a = junk_b = top_tokens_a = top_tokens_b = None
    if junk or shared:
        if labels_a is None or labels_b is None:
            raise ValueError(f"{key}: a junk list or shared_top_token needs the labels of both SAEs")
        latents_a = labels_by_latent(labels_a, len(np.asarray(corr.best_b_for_a[...])), "labels of A")
        latents_b = labels_by_latent(labels_b, len(np.asarray(corr.best_a_for_b[...])), "labels of B")
        if junk:
            junk_a, junk_b = (
                junk_flags(latents.top_tokens, junk, top_token_ids=latents.top_token_ids, top_k=top_k, match=match)
                for latents in (latents_a, latents_b)
            )
        # Token ids decide "shared" (one tokenizer per experiment); exact mode compares decoded strings, as the study.
        if match == "exact":
            top_tokens_a, top_tokens_b = latents_a.top_tokens, latents_b.top_tokens
        else:
            top_tokens_a, top_tokens_b = latents_a.top_token_ids, latents_b.top_token_ids
        top_tokens_a = [tokens[:top_k] for tokens in top_tokens_a]
        top_tokens_b = [tokens[:top_k] for tokens in top_tokens_b]
    pairs = pair(
        corr,
        variant.strategy,
        min_corr=variant.min_corr,
        junk_a=junk_a,
        junk_b=junk_b,
        shared_top_token=shared,
        top_tokens_a=top_tokens_a,
        top_tokens_b=top_tokens_b,
    )
    pairs.diagnostics.update(
        {
            "junk_match": match,
            "junk_top_k": top_k,
            "n_junk_texts": len(junk.texts),
            "n_junk_ids": len(junk.ids),
        }
    )
    return pairs


LABEL_COLUMNS_USED = ["latent", "top_tokens", "top_token_ids"]
