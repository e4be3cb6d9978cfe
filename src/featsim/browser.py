"""Pair browser: for one layer pair, the highest-correlated latent pairs with both latents' top contexts.

This is the check researchers make by eye: do paired latents fire on the same things? Each page is a
self-contained HTML file (the activation scatter is embedded as a data URI, so it also shows inside
the Snakemake report's iframe); the scatter is written beside it as a PNG for the report as well.
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from tqdm import tqdm


MAX_SCATTER_POINTS = 20_000
"""Tokens drawn per scatter panel (a seeded subsample beyond this; the title says so)."""

_MARKED = re.compile(r"\[\[(.*?)\]\]", re.DOTALL)


@dataclass(frozen=True)
class BrowserSettings:
    """Config key `report`: how many pairs a page lists and how many get an activation scatter."""

    browser_pairs: int = 25  # highest-correlated pairs listed per layer pair
    scatter_pairs: int = 4  # pairs whose per-token activation scatter is drawn
    contexts: int = 5  # top contexts shown per latent

    @classmethod
    def from_config(cls, report: Mapping | None) -> "BrowserSettings":
        """From the `report` config slice (other keys of it are used by the figures)."""
        report = dict(report or {})
        return cls(browser_pairs=int(report.get("browser_pairs", cls.browser_pairs)),
                   scatter_pairs=int(report.get("scatter_pairs", cls.scatter_pairs)))


def top_pairs(pairs: pd.DataFrame, n_pairs: int) -> pd.DataFrame:
    """The `n_pairs` pairs with the highest correlation (ties: lower A, then lower B latent first)."""
    missing = {"a", "b", "corr"} - set(pairs.columns)
    if missing:
        raise ValueError(f"pairs table lacks columns {sorted(missing)}; rebuild the pairs")
    ordered = pairs.assign(_neg=-pairs["corr"].astype(float)).sort_values(["_neg", "a", "b"], kind="stable")
    return ordered.drop(columns="_neg").head(max(n_pairs, 0)).reset_index(drop=True)


def labels_index(labels: pd.DataFrame, source: str = "labels") -> dict[int, dict]:
    """Labels rows keyed by latent id."""
    missing = {"latent", "top_tokens", "top_contexts"} - set(labels.columns)
    if missing:
        raise ValueError(f"{source}: labels table lacks columns {sorted(missing)}; rebuild it with the labels rule")
    return {int(row["latent"]): row for row in labels.to_dict("records")}


def pair_activations(codes_a, codes_b, latents_a: Sequence[int], latents_b: Sequence[int],
                     rows: int | None = None, aligned: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Per-token values of the chosen latents of both code stores, streamed in row chunks.

    Returns (values_a [n_tokens_a, len(latents_a)], values_b [n_tokens_b, len(latents_b)]); rows are
    aligned because both stores hold the same unmasked token positions, unless `aligned` (codes of two
    token stores, lined up afterwards by featsim.alignment.RowPairs).
    """
    if not aligned and codes_a.n_tokens != codes_b.n_tokens:
        raise ValueError(f"code stores have {codes_a.n_tokens} and {codes_b.n_tokens} rows; both must hold "
                         "the same unmasked token positions (rebuild the codes from one tokens.zarr)")
    columns_a = np.asarray(latents_a, dtype=np.int64)
    columns_b = np.asarray(latents_b, dtype=np.int64)
    values_a = np.zeros((codes_a.n_tokens, len(columns_a)), dtype=np.float32)
    values_b = np.zeros((codes_b.n_tokens, len(columns_b)), dtype=np.float32)
    for side, values, codes, columns in (("a", values_a, codes_a, columns_a), ("b", values_b, codes_b, columns_b)):
        start = 0
        for chunk in tqdm(codes.iter_chunks(rows), desc=f"browser: codes {side}", unit="chunk", leave=False):
            stop = start + chunk.shape[0]
            if len(columns):
                values[start:stop] = chunk[:, columns].toarray()
            start = stop
    return values_a, values_b


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation of two vectors (NaN if either is constant)."""
    x = np.asarray(x, dtype=np.float64) - np.mean(x)
    y = np.asarray(y, dtype=np.float64) - np.mean(y)
    denominator = np.sqrt((x @ x) * (y @ y))
    return float(x @ y / denominator) if denominator > 0 else float("nan")


def scatter_figure(values_a: np.ndarray, values_b: np.ndarray, pairs: pd.DataFrame, title: str,
                   seed: int = 0) -> Figure:
    """One panel per pair: activation of latent a (x) vs latent b (y) on every token where either fires."""
    n_panels = len(pairs)
    if n_panels == 0:
        figure = Figure(figsize=(6, 2), layout="constrained")
        figure.text(0.5, 0.5, "no pairs to scatter (report.scatter_pairs is 0 or the layer pair has no pairs)",
                    ha="center", va="center")
        return figure
    n_cols = min(n_panels, 4)
    n_rows = int(np.ceil(n_panels / n_cols))
    figure = Figure(figsize=(3.4 * n_cols + 0.3, 3.3 * n_rows + 0.8), layout="constrained")
    rng = np.random.default_rng(seed)
    for index, record in enumerate(pairs.itertuples(index=False)):
        x, y = values_a[:, index], values_b[:, index]
        either = np.flatnonzero((x != 0) | (y != 0))
        shown = either if len(either) <= MAX_SCATTER_POINTS else np.sort(rng.choice(either, MAX_SCATTER_POINTS,
                                                                                     replace=False))
        ax = figure.add_subplot(n_rows, n_cols, index + 1)
        ax.scatter(x[shown], y[shown], s=5, alpha=0.35, color="#1b6ca8", linewidths=0, rasterized=True)
        ax.set_xlabel(f"A latent {int(record.a)} activation", fontsize=8)
        ax.set_ylabel(f"B latent {int(record.b)} activation", fontsize=8)
        ax.tick_params(labelsize=7)
        sample = "" if len(shown) == len(either) else f", {len(shown)} drawn"
        ax.set_title(f"A{int(record.a)} ~ B{int(record.b)}: r={float(record.corr):.2f} "
                     f"(recomputed {pearson(x, y):.2f})\n{len(either)} of {len(x)} tokens fire{sample}", fontsize=8)
    figure.suptitle(title, fontsize=10)
    return figure


def figure_png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


def _context_html(context: str) -> str:
    """A context string from the labels (activating token wrapped in [[...]]) as HTML with <mark>."""
    parts = _MARKED.split(str(context))
    return "".join(f"<mark>{html.escape(part)}</mark>" if i % 2 else html.escape(part) for i, part in enumerate(parts))


def _latent_cell(label: dict | None, n_contexts: int) -> str:
    if label is None:
        return '<td class="none">no labels for this latent</td>'
    tokens = list(label.get("top_tokens") if label.get("top_tokens") is not None else [])
    contexts = list(label.get("top_contexts") if label.get("top_contexts") is not None else [])
    values = list(label.get("top_values") if label.get("top_values") is not None else [])
    counts: dict[str, int] = {}
    for token in tokens:
        counts[token] = counts.get(token, 0) + 1
    token_text = ", ".join(f"{html.escape(repr(token)[1:-1])}&times;{count}" if count > 1 else
                           html.escape(repr(token)[1:-1]) for token, count in counts.items())
    items = []
    for position, context in enumerate(contexts[:n_contexts]):
        value = f'<span class="v">{values[position]:.2f}</span> ' if position < len(values) else ""
        items.append(f"<li>{value}{_context_html(context)}</li>")
    n_active = label.get("n_active")
    fires = f"fires on {int(n_active)} tokens; " if n_active is not None else ""
    return (f'<td><div class="tok">{fires}top tokens: {token_text or "(none)"}</div>'
            f'<ol class="ctx">{"".join(items)}</ol></td>')


PAGE_STYLE = """
body { font-family: sans-serif; font-size: 13px; margin: 1em; }
table { border-collapse: collapse; width: 100%; table-layout: fixed; }
th, td { border: 1px solid #ccc; padding: 4px 6px; vertical-align: top; }
th { background: #eee; } col.num { width: 4.5em; } col.lat { width: 45%; }
mark { background: #ffe08a; font-weight: bold; padding: 0 1px; }
ol.ctx { margin: 2px 0 0 1.2em; padding: 0; font-family: monospace; font-size: 12px; }
.tok { color: #333; margin-bottom: 2px; } .v { color: #888; } td.none { color: #999; }
img { max-width: 100%; }
"""


def browser_page(pairs: pd.DataFrame, labels_a: Mapping[int, dict], labels_b: Mapping[int, dict], title: str,
                 scatter_png: bytes | None = None, n_contexts: int = 5, note: str = "",
                 provenance: Mapping | None = None) -> str:
    """The HTML page: a table of pairs, both latents' top tokens and marked top contexts side by side."""
    rows = []
    for rank, record in enumerate(pairs.itertuples(index=False), start=1):
        extra = []
        if hasattr(record, "mutual"):
            extra.append("mutual best" if bool(record.mutual) else "not mutual")
        rows.append(
            f"<tr><td>{rank}</td><td>{float(record.corr):.3f}<br><small>{'<br>'.join(extra)}</small></td>"
            f"<td>A {int(record.a)}<br>B {int(record.b)}</td>"
            f"{_latent_cell(labels_a.get(int(record.a)), n_contexts)}"
            f"{_latent_cell(labels_b.get(int(record.b)), n_contexts)}</tr>")
    image = ""
    if scatter_png:
        encoded = base64.b64encode(scatter_png).decode("ascii")
        image = (f'<h3>Per-token activations of the top pairs</h3><img alt="activation scatter" '
                 f'src="data:image/png;base64,{encoded}">')
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<!-- featsim provenance: {html.escape(json.dumps(dict(provenance or {})), quote=False).replace("--", "- -")} -->
<style>{PAGE_STYLE}</style></head><body>
<h2>{html.escape(title)}</h2>
<p>The {len(pairs)} highest-correlated pairs of this layer pair (Pearson r of the two latents' activations over
all unmasked tokens). For each latent: its top activating tokens and its top activating contexts, the activating
token <mark>highlighted</mark>, activation value in grey. Paired latents that mean the same thing fire on the same
words in similar contexts. {html.escape(note)}</p>
<table><colgroup><col class="num"><col class="num"><col class="num"><col class="lat"><col class="lat"></colgroup>
<thead><tr><th>rank</th><th>r</th><th>latents</th><th>latent of model a</th><th>latent of model b</th></tr></thead>
<tbody>
{chr(10).join(rows)}
</tbody></table>
{image}
</body></html>
"""
