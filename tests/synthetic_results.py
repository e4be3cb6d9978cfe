"""Synthetic score / semantic / pairs-diagnostics files in the layout the scoring and pairing rules write.

Used by tests/test_summary.py, tests/test_figures.py and tests/test_browser.py. Values come from a
seeded generator; p-values are made the way featsim.null makes them, p = (b+1)/(m+1).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from featsim.pairing import pair


def cell_provenance(metric: str, layer_a: int, layer_b: int) -> dict:
    """The provenance identity featsim's score writers stamp (the summary reads the cell from it)."""
    return {"config_hash": "abc123", "featsim_version": "0.1.0", "metric": metric, "layer_a": layer_a,
            "layer_b": layer_b}


def score_record(rng: np.random.Generator, metric: str, m: int, shift: float, seed: int, cell: tuple[int, int],
                 **extra) -> tuple[dict, np.ndarray]:
    """A scored cell: a null of m draws and an observed value `shift` null-sds above its mean."""
    null = rng.normal(0.5, 0.02, size=m)
    observed = float(null.mean() + shift * null.std(ddof=1))
    exceed = int(np.sum(null >= observed))
    record = {
        "status": "scored", "reason": "", "metric": metric, "observed": observed,
        "null_mean": float(null.mean()), "null_std": float(null.std(ddof=1)),
        "p_value": (exceed + 1) / (m + 1), "z": float((observed - null.mean()) / null.std(ddof=1)),
        "n_pairs": int(rng.integers(50, 200)), "n_permutations": m, "seed": seed,
        "k_a": 12 if metric == "svcca" else None, "k_b": 14 if metric == "svcca" else None,
        "flags": ["n_lt_5k"] if metric == "svcca" else [],
        "provenance": cell_provenance(metric, *cell),
        **extra,
    }
    return record, null


def not_scored_record(metric: str, m: int, cell: tuple[int, int], **extra) -> dict:
    return {"status": "not_scored", "reason": "fewer than 3 pairs", "metric": metric, "observed": None,
            "null_mean": None, "null_std": None, "p_value": None, "z": None, "n_pairs": 2,
            "n_permutations": m, "seed": 0, "flags": [], "provenance": cell_provenance(metric, *cell), **extra}


def write_scores(root: Path, cmp: str, pairing: str, metrics, layers_a, layers_b, m: int = 199,
                 not_scored=(), seed: int = 0) -> list[Path]:
    """results/{exp}/scores/{cmp}/{pairing}/{metric}/A{la}_B{lb}.json (+ .null.npy); returns the json paths.

    `not_scored`: (metric, la, lb) cells written as not scored.
    """
    rng = np.random.default_rng(seed)
    paths = []
    for metric in metrics:
        for la in layers_a:
            for lb in layers_b:
                path = root / "scores" / cmp / pairing / metric / f"A{la}_B{lb}.json"
                path.parent.mkdir(parents=True, exist_ok=True)
                if (metric, la, lb) in not_scored:
                    record, null = not_scored_record(metric, m, (la, lb)), np.zeros(0)
                else:
                    record, null = score_record(rng, metric, m, shift=float(rng.uniform(-1, 5)), seed=la * 10 + lb,
                                                cell=(la, lb))
                path.write_text(json.dumps(record))
                np.save(path.with_name(f"A{la}_B{lb}.null.npy"), null)
                paths.append(path)
    return paths


def write_semantic(root: Path, cmp: str, pairing: str, concepts, metrics, layers_a, layers_b, m: int = 199,
                   not_scored=(), seed: int = 1) -> list[Path]:
    """results/{exp}/semantic/{cmp}/{concept}/{pairing}/{metric}/A{la}_B{lb}.json; returns the paths."""
    rng = np.random.default_rng(seed)
    paths = []
    for concept in concepts:
        extra = {"concept": concept, "concept_name": concept.title(), "n_latents_a": 7, "n_latents_b": 5,
                 "keywords": {"a": {f"{concept}0": 3, f"{concept}1": 1}, "b": {f"{concept}0": 4},
                              "shared": {f"{concept}0": 2}, "n_pairs_sharing_a_keyword": 2}}
        for metric in metrics:
            for la in layers_a:
                for lb in layers_b:
                    path = root / "semantic" / cmp / concept / pairing / metric / f"A{la}_B{lb}.json"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    if (concept, metric, la, lb) in not_scored:
                        record = not_scored_record(metric, m, (la, lb), **{**extra, "keywords": None})
                    else:
                        record, _ = score_record(rng, metric, m, shift=float(rng.uniform(-1, 4)), seed=0,
                                                 cell=(la, lb), **extra)
                    path.write_text(json.dumps(record))
                    paths.append(path)
    return paths


def correlation_result(rng: np.random.Generator, d_a: int, d_b: int, k: int = 3) -> SimpleNamespace:
    """A random correlation result with the fields featsim.pairing.pair reads (one latent excluded per side)."""
    corr = rng.uniform(-0.2, 0.9, size=(d_a, d_b))
    topk_a_for_b = np.argsort(-corr, axis=0)[:k].T  # [d_b, k]
    topk_b_for_a = np.argsort(-corr, axis=1)[:, :k]  # [d_a, k]
    result = SimpleNamespace(
        best_a_for_b=topk_a_for_b[:, 0].copy(), best_corr_for_b=corr.max(axis=0),
        best_b_for_a=topk_b_for_a[:, 0].copy(), best_corr_for_a=corr.max(axis=1),
        topk_a_for_b=topk_a_for_b, topk_corr_for_b=np.take_along_axis(corr.T, topk_a_for_b, axis=1),
        topk_b_for_a=topk_b_for_a, topk_corr_for_a=np.take_along_axis(corr, topk_b_for_a, axis=1),
    )
    result.best_a_for_b[0] = -1  # B latent 0 fired too rarely: excluded, never paired
    result.best_corr_for_b[0] = np.nan
    return result


def write_pairs(root: Path, cmp: str, pairing: str, layers_a, layers_b, d_a: int = 30, d_b: int = 40,
                strategy: str = "one_to_one", seed: int = 2) -> tuple[list[Path], dict]:
    """Pairs parquet + diagnostics json from featsim.pairing.pair on random correlations.

    Returns (parquet paths, {(la, lb): the correlation result}) so tests can compute oracles.
    """
    import pandas as pd

    rng = np.random.default_rng(seed)
    paths, results = [], {}
    for la in layers_a:
        for lb in layers_b:
            corr = correlation_result(rng, d_a, d_b)
            pairs = pair(corr, strategy, min_corr=0.1)
            path = root / "pairs" / cmp / pairing / f"A{la}_B{lb}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            pd.DataFrame(pairs.to_frame()).to_parquet(path)
            record = {"provenance": {"layer_a": la, "layer_b": lb}, **pairs.diagnostics}
            path.with_name(f"A{la}_B{lb}.diagnostics.json").write_text(json.dumps(record))
            paths.append(path)
            results[(la, lb)] = corr
    return paths, results
