"""Held-out split of the token rows: pair latents on one part, label them on the other.

The original study selected pairs, labelled features, filtered junk and defined concepts on the same
tokens (reference-method B32). With `data.heldout_fraction` f > 0, a seeded f share of the token
sequences is held out: labels (top contexts, hence the junk filter and concept membership) come from
the held-out sequences only, and the correlation that pairs latents from the others. Whole sequences
are held out, so no context window straddles the two parts. f = 0 uses every row for both, as the
study did.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from featsim.errors import ConfigError

SPLIT_STREAM = 0x5E1D
"""Mixed into `data.seed` so the split does not reuse the random stream of the corpus sampling."""


@dataclass(frozen=True)
class TokenSplit:
    """Which code-store rows each stage reads (bool masks over the rows, i.e. the unmasked positions)."""

    pair_rows: np.ndarray  # rows the correlation (pairing) uses
    label_rows: np.ndarray  # rows labels, junk filters and concept membership use
    heldout_fraction: float
    n_heldout_sequences: int
    n_sequences: int

    @property
    def pair_selection(self) -> np.ndarray | None:
        """`pair_rows`, or None when nothing is held out (every row: no selection needed)."""
        return self.pair_rows if self.heldout_fraction > 0 else None

    @property
    def label_selection(self) -> np.ndarray | None:
        """`label_rows`, or None when nothing is held out."""
        return self.label_rows if self.heldout_fraction > 0 else None

    def describe(self) -> dict:
        """JSON-ready record for provenance."""
        return {"heldout_fraction": self.heldout_fraction, "n_sequences": self.n_sequences,
                "n_heldout_sequences": self.n_heldout_sequences, "n_pair_rows": int(self.pair_rows.sum()),
                "n_label_rows": int(self.label_rows.sum())}


def heldout_sequences(n_sequences: int, fraction: float, seed: int) -> np.ndarray:
    """bool [n_sequences]: round(fraction x n_sequences) sequences chosen by a seeded permutation."""
    if not 0.0 <= fraction < 1.0:
        raise ConfigError("data.heldout_fraction", f"must be in [0, 1), got {fraction}")
    n_heldout = int(round(fraction * n_sequences))
    if fraction > 0 and not 1 <= n_heldout < n_sequences:
        raise ConfigError("data.heldout_fraction",
                          f"{fraction} of {n_sequences} sequences leaves one part empty; "
                          "use more tokens (data.n_tokens) or a fraction between 1/n and 1 - 1/n")
    chosen = np.random.default_rng([seed, SPLIT_STREAM]).permutation(n_sequences)[:n_heldout]
    heldout = np.zeros(n_sequences, dtype=bool)
    heldout[chosen] = True
    return heldout


def token_split(unmasked_positions: np.ndarray, context_length: int, n_sequences: int, fraction: float,
                seed: int) -> TokenSplit:
    """The split of code-store rows (row i = flat position unmasked_positions[i] of tokens.zarr)."""
    sequence_of_row = np.asarray(unmasked_positions, dtype=np.int64) // int(context_length)
    if fraction == 0:
        every = np.ones(sequence_of_row.size, dtype=bool)
        return TokenSplit(every, every, 0.0, 0, int(n_sequences))
    heldout = heldout_sequences(int(n_sequences), float(fraction), int(seed))[sequence_of_row]
    if heldout.all() or not heldout.any():
        raise ConfigError("data.heldout_fraction",
                          f"the held-out sequences hold {'every' if heldout.all() else 'no'} unmasked token; "
                          "use a different fraction or more tokens")
    return TokenSplit(~heldout, heldout, float(fraction), int(round(fraction * n_sequences)), int(n_sequences))


def split_of_tokens_store(tokens, fraction: float, seed: int) -> TokenSplit:
    """`token_split` of an open `featsim.stores.TokenStore`."""
    return token_split(tokens.unmasked_positions(), tokens.context_length, tokens.n_sequences, fraction, seed)


def load_split(tokens, split_config: dict | None) -> TokenSplit | None:
    """The split a rule's `split` params ({heldout_fraction, seed}) define over a tokens store (a path or an
    open `featsim.stores.TokenStore`); None without params (every row, as before the split existed)."""
    if split_config is None:
        return None
    if isinstance(tokens, (str, os.PathLike)):
        from featsim.stores import open_tokens

        tokens = open_tokens(tokens)
    return split_of_tokens_store(tokens, float(split_config["heldout_fraction"]), int(split_config["seed"]))
