"""Targets of the summary rules: a summary table as CSV with its provenance beside it, and its HTML page."""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

import pandas as pd

from featsim.layout import PROVENANCE, sibling
from featsim.provenance import write_table
from featsim.summary import COLUMN_DOCS, summary_html, write_html


def write_summary(path: str | os.PathLike, table: pd.DataFrame, config_slice: Mapping, *,
                  ids: Mapping[str, Any]) -> None:
    """Write the table as CSV atomically and its provenance + column descriptions beside it."""
    hashes = sorted({h for h in table.get("score_config_hash", pd.Series(dtype=object)).dropna()})
    write_table(path, table, dict(config_slice), COLUMN_DOCS, {"upstream_config_hashes": hashes}, ids=ids)


def write_summary_target(table: pd.DataFrame, csv_path: str | os.PathLike, html_path: str | os.PathLike, title: str,
                         config_slice: Mapping, *, ids: Mapping[str, Any]) -> None:
    """The summary rules' outputs: the CSV (+ provenance json beside it) and its HTML rendering."""
    write_summary(csv_path, table, config_slice, ids=ids)
    provenance = json.loads(sibling(csv_path, PROVENANCE).read_text())
    provenance.pop("columns", None)
    write_html(html_path, summary_html(table, title, provenance))
