"""Character alignment of two token stores: the row pairs where two tokenizations have read the same text.

Two models with different tokenizers see the same documents cut differently, so their code stores have no
common rows. A position of store A and one of store B are aligned when both end a token at the same
character offset of the same document: both models have then read that document up to the same character
(how far back their context rows reach still differs). `word` mode keeps only word ends (the offset is not
inside a run of letters/digits). Masks apply per side: only unmasked positions (code-store rows) take part.
When bytes of one character are split over several tokens, all end at that character; only the last, the
one after which the character is complete, is a candidate.

What alignment drops: every position inside a word the other tokenizer cuts elsewhere (in token mode, the
finer tokenization loses its extra positions; in word mode, both sides keep word ends only), positions one
side masks (BOS, separators, specials), and text only one store holds. The store written here records the
aligned pairs as code-row indices (`rows_a`, `rows_b`) and, in its attrs, the counts and aligned shares of
each side.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from featsim.errors import ConfigError
from featsim.split import load_split
from featsim.tokenstores import ALIGN_MODES

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RowPairs:
    """Aligned code-store rows: row `a[i]` of side A's codes and row `b[i]` of side B's hold the same text."""

    a: np.ndarray  # int64 [n_pairs]
    b: np.ndarray  # int64 [n_pairs]

    def __post_init__(self) -> None:
        if self.a.shape != self.b.shape or self.a.ndim != 1:
            raise ValueError(f"row pairs need two equal 1-D index arrays, got {self.a.shape} and {self.b.shape}")

    def __len__(self) -> int:
        return int(self.a.size)

    def select(self, keep: np.ndarray) -> "RowPairs":
        """The pairs where the bool mask `keep` [n_pairs] is True."""
        return RowPairs(self.a[keep], self.b[keep])


@dataclass(frozen=True)
class SideCandidates:
    """One store's alignable positions: code rows, (document, character end) keys and word-end flags."""

    rows: np.ndarray  # int64 code-store rows of the candidates
    doc: np.ndarray  # int64
    end: np.ndarray  # int64 character end offsets
    word_end: np.ndarray  # bool
    n_unmasked: int


def side_candidates(spans: dict[str, np.ndarray], unmasked_positions: np.ndarray, mode: str) -> SideCandidates:
    """The positions of one store that can align: unmasked, inside a document, the last token ending at its
    character offset (byte pieces of one character share it), and in `word` mode a word end.

    `spans`: the store's flattened span arrays (stores.TokenStore.read_spans); `unmasked_positions`: its
    code-store rows as flat positions (stores.TokenStore.unmasked_positions).
    """
    if mode not in ALIGN_MODES:
        raise ConfigError("comparisons.<c>.align", f"{mode!r} is not one of {list(ALIGN_MODES)}")
    doc, end = spans["doc"].astype(np.int64), spans["char_end"].astype(np.int64)
    in_doc = np.flatnonzero(doc >= 0)  # stream order: BOS, separators and padding skipped
    last_of_offset = np.ones(in_doc.size, bool)
    last_of_offset[:-1] = (doc[in_doc[1:]] != doc[in_doc[:-1]]) | (end[in_doc[1:]] != end[in_doc[:-1]])
    candidate = np.zeros(doc.size, bool)
    candidate[in_doc[last_of_offset]] = True
    if mode == "word":
        candidate &= spans["word_end"]
    positions = np.asarray(unmasked_positions, np.int64)
    keep = candidate[positions]
    flat = positions[keep]
    return SideCandidates(np.flatnonzero(keep).astype(np.int64), doc[flat], end[flat], spans["word_end"][flat],
                          int(positions.size))


def align_candidates(side_a: SideCandidates, side_b: SideCandidates) -> RowPairs:
    """Pairs of candidates with equal (document, character end), in side A's row order."""
    width = int(max(side_a.end.max(initial=0), side_b.end.max(initial=0))) + 1
    keys_a = side_a.doc * width + side_a.end
    keys_b = side_b.doc * width + side_b.end
    unique_a, first_a = np.unique(keys_a, return_index=True)
    unique_b, first_b = np.unique(keys_b, return_index=True)
    _, in_a, in_b = np.intersect1d(unique_a, unique_b, assume_unique=True, return_indices=True)
    rows_a, rows_b = side_a.rows[first_a[in_a]], side_b.rows[first_b[in_b]]
    order = np.argsort(rows_a, kind="stable")
    return RowPairs(rows_a[order], rows_b[order])


def _share(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def alignment_counts(pairs: RowPairs, side_a: SideCandidates, side_b: SideCandidates, mode: str) -> dict:
    """Counts and shares recorded in an alignment store's attrs.

    `aligned_share` = pairs / the smaller side's candidates: 1 when every boundary of the coarser tokenization
    is one of the finer's too (the floor `data.align_min_share` is checked against it); `share_a` / `share_b`
    = pairs / that side's candidates; `word_end_share_a/b` = aligned word ends / that side's word ends.
    """
    aligned_word_ends = int(side_a.word_end[np.searchsorted(side_a.rows, pairs.a)].sum()) if len(pairs) else 0
    counts = {"mode": mode, "n_pairs": len(pairs),
              "aligned_share": _share(len(pairs), min(side_a.rows.size, side_b.rows.size))}
    for name, side, rows in (("a", side_a, pairs.a), ("b", side_b, pairs.b)):
        counts.update({f"n_unmasked_{name}": side.n_unmasked, f"n_candidates_{name}": int(side.rows.size),
                       f"share_{name}": _share(len(pairs), int(side.rows.size)),
                       f"share_of_unmasked_{name}": _share(len(pairs), side.n_unmasked),
                       f"n_word_ends_{name}": int(side.word_end.sum()),
                       f"word_end_share_{name}": _share(aligned_word_ends, int(side.word_end.sum()))})
    return counts


def check_aligned_share(counts: dict, min_share: float, tokenizer_a: str, tokenizer_b: str) -> None:
    """Stop when the aligned share is below `data.align_min_share`, naming both tokenizers."""
    share = counts["aligned_share"]
    if share is None or share < min_share:
        shown = "no position" if share is None else f"{share:.1%} of the positions"
        raise ConfigError("data.align_min_share",
                          f"tokenizers {tokenizer_a} and {tokenizer_b} align at {shown} ({counts['mode']} mode; "
                          f"{counts['n_pairs']} pairs of {counts['n_candidates_a']} / {counts['n_candidates_b']} "
                          f"candidates), below the floor {min_share}: the stores do not hold the same text the same "
                          "way (different documents, or a tokenizer that normalises text), so their codes cannot "
                          "be compared position by position; lower the floor only if that loss is expected")


def build_alignment(tokens_a, tokens_b, mode: str) -> tuple[RowPairs, dict]:
    """Aligned row pairs and counts of two open token stores (stores.TokenStore, both with spans)."""
    side_a = side_candidates(tokens_a.read_spans(), tokens_a.unmasked_positions(), mode)
    side_b = side_candidates(tokens_b.read_spans(), tokens_b.unmasked_positions(), mode)
    pairs = align_candidates(side_a, side_b)
    return pairs, alignment_counts(pairs, side_a, side_b, mode)


def write_alignment(path: str | os.PathLike, pairs: RowPairs, attrs: dict) -> None:
    """Write the pairs (rows_a, rows_b int64) and attrs as an `alignment` store, atomically."""
    from featsim.stores import atomic_store, create_checked_array

    chunk = max(1, min(len(pairs), 1 << 20))
    with atomic_store(path, "alignment", attrs) as group:
        create_checked_array(group, "rows_a", data=pairs.a.astype(np.int64), chunks=(chunk,))
        create_checked_array(group, "rows_b", data=pairs.b.astype(np.int64), chunks=(chunk,))
        group.attrs["n_pairs"] = len(pairs)


def open_alignment(path: str | os.PathLike) -> tuple[RowPairs, dict]:
    """The row pairs and attrs of a finished alignment store (shapes checked against its attrs)."""
    from featsim.stores import check_arrays, open_store, read_checked, recorded

    path = Path(path)
    group = open_store(path, "alignment")
    n_pairs = int(recorded(path, group, "alignment", "n_pairs"))
    check_arrays(path, group, "alignment", {"rows_a": ((n_pairs,), np.int64), "rows_b": ((n_pairs,), np.int64)})
    pairs = RowPairs(read_checked(path, group, "alignment", "rows_a", slice(None)),
                     read_checked(path, group, "alignment", "rows_b", slice(None)))
    return pairs, dict(group.attrs)


def comparison_rows(tokens_path, split_config: dict | None, tokens_b_path=None, alignment_path=None):
    """The rows a comparison correlates over: the pairing rows of the held-out split (a bool mask over the
    shared rows, or None for all), or, for a comparison across token stores, the aligned `RowPairs` whose
    rows are pairing rows on both sides (each store holds out its own sequences, so labels of either model
    never read a row that pairs latents)."""
    if alignment_path is None:
        split = load_split(tokens_path, split_config) if tokens_path is not None else None
        return split.pair_selection if split is not None else None
    pairs, _ = open_alignment(alignment_path)
    if split_config is None or float(split_config["heldout_fraction"]) == 0:
        return pairs
    split_a, split_b = load_split(tokens_path, split_config), load_split(tokens_b_path, split_config)
    return pairs.select(split_a.pair_rows[pairs.a] & split_b.pair_rows[pairs.b])


def describe_rows(rows) -> dict | None:
    """JSON-ready record of a `comparison_rows` result, for provenance."""
    if isinstance(rows, RowPairs):
        return {"aligned_pairs": len(rows)}
    return None if rows is None else {"rows": int(np.count_nonzero(rows))}
