"""Target of the `labels` rule: per-latent top activations with token, word and context, as parquet with provenance."""

from __future__ import annotations

import os
from dataclasses import asdict

import pandas as pd

from featsim.labels import LabelsConfig, label_latents, load_tokenizer
from featsim.parquet import write_parquet
from featsim.provenance import make_provenance
from featsim.split import load_split
from featsim.stores import open_codes, open_tokens


def write_labels(codes_path: str | os.PathLike, tokens_path: str | os.PathLike, out_path: str | os.PathLike,
                 config: LabelsConfig, ids: dict | None = None, tokenizer=None,
                 split_config: dict | None = None) -> pd.DataFrame:
    """The `labels` target: compute labels and write them (atomic parquet with provenance).

    `split_config` ({heldout_fraction, seed}): label on the held-out rows only (featsim.split)."""
    codes = open_codes(codes_path)
    tokens = open_tokens(tokens_path)
    tokenizer = tokenizer if tokenizer is not None else load_tokenizer(tokens.attrs, str(tokens_path))
    split = load_split(tokens, split_config)
    rows = split.label_selection if split else None
    table = label_latents(codes, tokens, tokenizer, config, rows=rows)
    provenance = make_provenance(
        {"labels": asdict(config), "split": split_config or {}},
        split=split.describe() if split is not None else None,
        kind="labels",
        top_k=config.top_k,
        context_window=config.context_window,
        codes=str(codes_path),
        codes_config_hash=codes.attrs.get("config_hash"),
        tokens_config_hash=tokens.attrs.get("config_hash"),
        n_tokens=int(rows.sum()) if rows is not None else codes.n_tokens,
        d_sae=codes.d_sae,
        **(ids or {}),
    )
    write_parquet(out_path, table, provenance)
    return table
