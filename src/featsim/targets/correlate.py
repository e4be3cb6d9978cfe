"""Target of the `correlate` rule: the correlation store of one layer pair, with its provenance."""

from __future__ import annotations

import os

from featsim.alignment import comparison_rows, describe_rows
from featsim.correlate import CorrelationConfig, max_correlation
from featsim.correlation_result import CorrelationResult, write_correlation
from featsim.provenance import make_provenance
from featsim.split import load_split
from featsim.stores import open_codes


def correlate_code_stores(codes_a_path: str | os.PathLike, codes_b_path: str | os.PathLike,
                          output: str | os.PathLike, correlation_config: dict | None,
                          ids: dict | None = None, tokens_path: str | os.PathLike | None = None,
                          split_config: dict | None = None, tokens_b_path: str | os.PathLike | None = None,
                          alignment_path: str | os.PathLike | None = None) -> CorrelationResult:
    """The `correlate` rule: correlate two code stores and write the correlation store with provenance.

    With `tokens_path` and `split_config` ({heldout_fraction, seed}) only the pairing rows of the
    held-out split are correlated (featsim.split). With `alignment_path` (codes of two token stores, side
    b's at `tokens_b_path`) the aligned row pairs that are pairing rows on both sides (featsim.alignment)."""
    cfg = CorrelationConfig.from_config(correlation_config)
    codes_a, codes_b = open_codes(codes_a_path), open_codes(codes_b_path)
    split = load_split(tokens_path, split_config) if tokens_path is not None else None
    rows = (comparison_rows(tokens_path, split_config, tokens_b_path, alignment_path) if alignment_path is not None
            else split.pair_selection if split is not None else None)
    result = max_correlation(codes_a, codes_b, top_k=cfg.top_k, min_active=cfg.min_active, device=cfg.device,
                             block_latents=cfg.block_latents, rows=rows)
    aligned = {"alignment": str(alignment_path), "rows": describe_rows(rows)} if alignment_path is not None else {}
    provenance = make_provenance({"correlation": correlation_config or {}, "split": split_config or {}},
                                 **(ids or {}), **aligned, n_tokens=result.n_tokens,
                                 split=split.describe() if split is not None else None,
                                 codes_a=str(codes_a_path), codes_b=str(codes_b_path),
                                 codes_a_config_hash=codes_a.attrs.get("config_hash"),
                                 codes_b_config_hash=codes_b.attrs.get("config_hash"))
    write_correlation(output, result, provenance)
    return result
