"""Parquet tables with their provenance record in the schema metadata (pyarrow is imported here only, so that
featsim.provenance stays light for the planning code that imports it)."""

from __future__ import annotations

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq

from featsim.provenance import atomic_path, jsonable

PARQUET_METADATA_KEY = b"featsim"


def write_parquet(path: str | os.PathLike, df, provenance: dict) -> None:
    """Write a DataFrame to parquet atomically, provenance in the schema metadata under `featsim`."""
    table = pa.Table.from_pandas(df, preserve_index=False)
    metadata = dict(table.schema.metadata or {})
    metadata[PARQUET_METADATA_KEY] = json.dumps(jsonable(provenance)).encode()
    table = table.replace_schema_metadata(metadata)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_parquet_provenance(path: str | os.PathLike) -> dict:
    """The provenance record of a featsim parquet file ({} for a foreign file)."""
    metadata = pq.read_schema(path).metadata or {}
    raw = metadata.get(PARQUET_METADATA_KEY)
    return json.loads(raw) if raw else {}
