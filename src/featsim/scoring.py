"""Score one cell: a metric on the paired decoder rows, its shuffled-pairing null, and the json record.

A cell is (comparison, pairing, metric, layer pair). Rows: X = W_dec_A[pairs.a], Y = W_dec_B[pairs.b].
Seeds: each cell's permutations come from `cell_seed(null.seed, comparison, pairing, "A{la}_B{lb}")`
(sha256 of that identity, so stable across runs, machines and Python versions). The metric is not
part of the identity: every metric of a cell sees the same re-pairings, and two cells never share
a permutation stream by accident.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, fields
from typing import Any, Mapping

import numpy as np
import pyarrow.parquet as pq

from featsim.errors import reject_unknown_keys
from featsim.metrics import DegenerateInputError, as_float64, get_metric
from featsim.multiple_testing import DEFAULT_ALPHA, underpowered_reason
from featsim.null import permutation_test

log = logging.getLogger(__name__)

MIN_PAIRS = 3
"""Fewer pairs than this: the cell is recorded as not scored (no metric is defined)."""


@dataclass(frozen=True)
class NullConfig:
    """The `null` config slice (its defaults are the schema's: tests/test_config_defaults.py)."""

    permutations: int = 10000
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    sequential_h: int | None = None

    @classmethod
    def from_config(cls, values: Mapping[str, Any] | None) -> "NullConfig":
        values = dict(values or {})
        reject_unknown_keys(values, {f.name for f in fields(cls)}, "null")
        return cls(**values)


def cell_seed(base_seed: int, *identity: str | int) -> int:
    """Deterministic 63-bit seed of one cell: sha256 of `base_seed/identity...`."""
    text = "/".join(["featsim-null", str(int(base_seed)), *map(str, identity)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") & (2**63 - 1)


def _not_scored(metric: str, n_pairs: int, n_permutations: int, seed: int, reason: str, options: dict,
                details: dict | None = None) -> dict:
    return {"status": "not_scored", "reason": reason, "metric": metric, "observed": None, "null_mean": None,
            "null_std": None, "p_value": None, "z": None, "p_min": None, "n_pairs": n_pairs,
            "n_permutations": n_permutations, "seed": seed, **(details or {}), "flags": ["not_scored"],
            "invariances": sorted(get_metric(metric).invariances), "options": options}


def power_status(p_min: float, alpha: float, n_pairs: int, n_permutations: int) -> tuple[str, str]:
    """(status, reason) of a scored cell on its own: underpowered when its smallest attainable p
    max(1/(m+1), 1/n!) is not below alpha (the summary also checks the adjusted floor of its family)."""
    if p_min >= alpha:
        return "underpowered", underpowered_reason(p_min, alpha, n_pairs, n_permutations)
    return "scored", ""


def paired_rows(decoder, latents: np.ndarray) -> np.ndarray:
    """decoder[latents] as float64 [n_pairs, d_model] (numpy, memory map or torch decoder)."""
    if hasattr(decoder, "detach"):  # torch.Tensor
        import torch

        return as_float64(decoder[torch.as_tensor(latents)])
    return as_float64(decoder[latents])


def score_pairs_with_null(decoder_a, decoder_b, pairs_a, pairs_b, metric: str, n_permutations: int, seed: int,
                          options: Mapping[str, Any] | None = None, *, device: str = "auto",
                          precision: str = "auto", threads: int | None = None, progress: bool = False,
                          alpha: float = DEFAULT_ALPHA, sequential_h: int | None = None) -> tuple[dict, np.ndarray]:
    """The json-ready record of one cell and its null draws ([m], empty when not scored).

    decoder_a [d_sae_a, d_model_a], decoder_b [d_sae_b, d_model_b]; pairs_a, pairs_b: latent
    indices of equal length (pair i = (pairs_a[i], pairs_b[i])). `status`: one of
    featsim.multiple_testing.STATUSES; `p_min`: the smallest attainable p; `alpha`: the significance
    level behind `underpowered`; `sequential_h`: Besag-Clifford stopping (featsim.null.permutation_test).
    """
    registered = get_metric(metric)
    options = registered.resolve_options(options)
    pairs_a, pairs_b = np.asarray(pairs_a, dtype=np.int64), np.asarray(pairs_b, dtype=np.int64)
    if pairs_a.shape != pairs_b.shape or pairs_a.ndim != 1:
        raise ValueError(f"pairs_a and pairs_b must be 1-D of equal length, got {pairs_a.shape} and {pairs_b.shape}")
    for side, pairs, decoder in (("a", pairs_a, decoder_a), ("b", pairs_b, decoder_b)):
        if pairs.size and (pairs.min() < 0 or pairs.max() >= decoder.shape[0]):
            raise ValueError(f"pairs column '{side}' holds latent indices outside [0, {decoder.shape[0]}): "
                             "the pairs and the decoder come from different SAEs; rebuild the pairs")
    n_pairs = int(pairs_a.size)
    if n_pairs < MIN_PAIRS:
        reason = f"{n_pairs} pairs: at least {MIN_PAIRS} are needed to score a cell"
        return _not_scored(metric, n_pairs, n_permutations, seed, reason, options), np.empty(0)

    X, Y = paired_rows(decoder_a, pairs_a), paired_rows(decoder_b, pairs_b)
    try:
        result = permutation_test(X, Y, metric, n_permutations, seed, options=options, device=device,
                                  precision=precision, threads=threads, progress=progress,
                                  sequential_h=sequential_h)
    except DegenerateInputError as error:
        log.warning("%s not scored: %s", metric, error)
        return _not_scored(metric, n_pairs, n_permutations, seed, str(error), options, error.details), np.empty(0)
    status, reason = power_status(result.p_min, alpha, n_pairs, result.max_permutations)
    record = {"status": status, "reason": reason, **result.to_dict(), "alpha": float(alpha),
              "invariances": sorted(registered.invariances), "options": options}
    return record, result.null


def score_pairs(decoder_a, decoder_b, pairs_a, pairs_b, metric: str, n_permutations: int, seed: int,
                options: Mapping[str, Any] | None = None, **null_options) -> dict:
    """JSON-ready record of one cell: status, reason, observed, null_mean, null_std, p_value, p_min, z,
    n_pairs, n_permutations, seed, k_a/k_b (svcca), flags, invariances; beside p: null_mean_exact,
    null_std_exact, z_exact, null_skew, p_tail, p_cantelli, tail_method, tail_flags, sequential_h,
    max_permutations, sequential_stopped. `null_options`: device, precision, threads, progress,
    sequential_h (see featsim.null.permutation_test), alpha."""
    record, _ = score_pairs_with_null(decoder_a, decoder_b, pairs_a, pairs_b, metric, n_permutations, seed,
                                      options, **null_options)
    return record


def load_pairs(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Columns a, b of a pairs parquet as int64 latent indices (pyarrow: pandas would add ~0.4 s a job)."""
    missing = {"a", "b"} - set(pq.read_schema(path).names)
    if missing:
        raise ValueError(f"{path}: pairs file lacks column(s) {sorted(missing)}; rebuild it with the `pair` rule")
    table = pq.read_table(path, columns=["a", "b"])
    return (table.column("a").to_numpy().astype(np.int64, copy=False),
            table.column("b").to_numpy().astype(np.int64, copy=False))


def load_decoder(path: str | os.PathLike) -> np.ndarray:
    """W_dec [d_sae, d_model], memory-mapped (only the paired rows are read)."""
    decoder = np.load(path, mmap_mode="r")
    if decoder.ndim != 2:
        raise ValueError(f"{path}: a decoder must be 2-D [d_sae, d_model], got shape {decoder.shape}")
    return decoder
