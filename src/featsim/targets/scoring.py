"""Target of the `score` rule: every metric's score json (with provenance) and null draws of one layer cell."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from featsim.layout import cell_name
from featsim.multiple_testing import DEFAULT_ALPHA
from featsim.parquet import read_parquet_provenance
from featsim.provenance import make_provenance, save_npy, write_json
from featsim.scoring import NullConfig, cell_seed, load_decoder, load_pairs, score_pairs_with_null

log = logging.getLogger(__name__)


def write_score(json_path: str | os.PathLike, null_path: str | os.PathLike, record: dict, null: np.ndarray) -> None:
    """Write the null draws, then the record (its provenance included); each file atomically."""
    save_npy(null_path, np.asarray(null, dtype=np.float64))
    write_json(json_path, record)


def score_cell(pairs_path: str | os.PathLike, decoder_a_path: str | os.PathLike, decoder_b_path: str | os.PathLike,
               json_path: str | os.PathLike, null_path: str | os.PathLike, *, metric: str,
               null_config: Mapping[str, Any], metric_options: Mapping[str, Any] | None,
               ids: Mapping[str, Any], threads: int | None = None, alpha: float = DEFAULT_ALPHA) -> dict:
    """The `score` rule: load pairs and decoders, score with a per-cell seed, write json + null.npy.

    ids: experiment, comparison, pairing, layer_a, layer_b (used for the seed and provenance).
    alpha: config `alpha`, the significance level behind the `underpowered` status.
    """
    null_config = NullConfig.from_config(null_config)
    seed = cell_seed(null_config.seed, ids["comparison"], ids["pairing"], cell_name(ids["layer_a"], ids["layer_b"]))
    pairs_a, pairs_b = load_pairs(pairs_path)
    started = time.perf_counter()
    log.info("scoring %s on %d pairs with %d permutations (seed %d)", metric, pairs_a.size,
             null_config.permutations, seed)
    record, null = score_pairs_with_null(
        load_decoder(decoder_a_path), load_decoder(decoder_b_path), pairs_a, pairs_b, metric,
        int(null_config.permutations), seed, metric_options, device=null_config.device,
        precision=null_config.precision, threads=threads, progress=True, alpha=alpha,
        sequential_h=null_config.sequential_h)
    record["base_seed"] = int(null_config.seed)
    log.info("%s: status %s, observed %s, null mean %s, p %s (%s draws), p_tail %s, flags %s (%.1f s)", metric,
             record["status"], record["observed"], record["null_mean"], record["p_value"], record["n_permutations"],
             record.get("p_tail"), record["flags"], time.perf_counter() - started)
    config_slice = {"null": asdict(null_config), "metric": metric, "metric_options": dict(metric_options or {}),
                    "alpha": float(alpha)}
    record["provenance"] = make_provenance(config_slice, **ids, metric=metric,
                                           pairs=read_parquet_provenance(pairs_path), pairs_file=str(Path(pairs_path)))
    write_score(json_path, null_path, record, null)
    return record


def score_cell_metrics(pairs_path: str | os.PathLike, decoder_a_path: str | os.PathLike,
                       decoder_b_path: str | os.PathLike, outputs: Mapping[str, tuple[str, str]], *,
                       null_config: Mapping[str, Any], metric_options: Mapping[str, Any] | None,
                       ids: Mapping[str, Any], threads: int | None = None,
                       alpha: float = DEFAULT_ALPHA) -> dict[str, dict]:
    """The `score` rule: every metric of one cell (metric -> (json path, null path)), one process.

    One job per cell instead of per metric saves a process start per metric; every metric sees the
    same re-pairings (the seed depends on the cell only), exactly as separate jobs would.
    """
    options = dict(metric_options or {})
    return {metric: score_cell(pairs_path, decoder_a_path, decoder_b_path, json_path, null_path, metric=metric,
                               null_config=null_config, metric_options=options.get(metric) or {},
                               ids=ids, threads=threads, alpha=alpha)
            for metric, (json_path, null_path) in outputs.items()}
