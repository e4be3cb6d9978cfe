"""Target of the `pair` rule: one layer cell's pairs (parquet) and diagnostics (json), each with provenance."""

from __future__ import annotations

import os
from typing import Any, Mapping

import pandas as pd

from featsim.correlation_result import open_correlation
from featsim.pairing import LABEL_COLUMNS_USED, PairingVariant, Pairs, pair_variant
from featsim.parquet import write_parquet
from featsim.provenance import make_provenance, write_json
from featsim.stores import open_store


def write_pairs(
    corr_path: str | os.PathLike,
    labels_a_path: str | os.PathLike,
    labels_b_path: str | os.PathLike,
    variant_config: Mapping[str, Any],
    pairs_path: str | os.PathLike,
    diagnostics_path: str | os.PathLike,
    *,
    key: str = "pairings.<variant>",
    ids: Mapping[str, Any] | None = None,
) -> Pairs:
    """The `pair` rule: pair one layer cell by one variant; write the pairs parquet and diagnostics json.

    Both files carry provenance: the variant's config hash, `ids`, and the correlation store's hash.
    """
    variant = PairingVariant.from_config(variant_config, key=key)
    corr = open_correlation(corr_path)
    labels_a = pd.read_parquet(labels_a_path, columns=LABEL_COLUMNS_USED)
    labels_b = pd.read_parquet(labels_b_path, columns=LABEL_COLUMNS_USED)
    pairs = pair_variant(corr, variant, labels_a, labels_b, key=key)
    provenance = make_provenance(
        dict(variant_config),
        **dict(ids or {}),
        correlation_config_hash=open_store(corr_path, kind="correlation").attrs.get("config_hash"),
    )
    write_parquet(pairs_path, pairs.to_frame(), provenance)
    write_json(diagnostics_path, {"provenance": provenance, **pairs.diagnostics})
    return pairs
