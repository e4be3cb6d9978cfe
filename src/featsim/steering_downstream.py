"""Downstream feature effects of steering (issue #14): which latents of a later layer's SAE respond when a model
is steered at layer k, in A and in B, and whether A's and B's responders are paired with each other more often
than chance.

A latent's response is the mean over prompts of |code_steered - code_clean| at the prompt's last position,
read in the same steered forward passes that measure the next-token effect (`Steerer(readouts=...)`).
Responders are the `n` latents with the largest positive response. Their overlap is the number of pairs of
the later cell whose A latent is among A's responders and whose B latent is among B's. The null keeps A's
responders and replaces B's with the responders of the null transfers (random pairings of the same size, or
maps fitted on shuffled pairs): p = (b + 1) / (m + 1), b the null overlaps at least the observed one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from featsim.steering_transfer import null_summary, permutation_p


def top_responders(response: np.ndarray, n: int) -> np.ndarray:
    """Ids of the `n` latents with the largest response > 0, largest first (ties: lower id first)."""
    response = np.asarray(response, dtype=np.float64)
    order = np.lexsort((np.arange(response.size), -response))
    return order[response[order] > 0][:n].astype(np.int64)


def paired_overlap(responders_a: np.ndarray, responders_b: np.ndarray, pairs_a: np.ndarray,
                   pairs_b: np.ndarray) -> int:
    """Pairs (a, b) with a among A's responders and b among B's."""
    return int(np.isin(pairs_b[np.isin(pairs_a, responders_a)], responders_b).sum())


@dataclass(frozen=True)
class LaterLayers:
    """A later cell of the comparison read out while steering an earlier one: its pairs and concept labels."""

    layer_a: int
    layer_b: int
    hook_a: str
    hook_b: str
    pairs_a: np.ndarray  # [n_pairs] A latents
    pairs_b: np.ndarray  # [n_pairs] B latents
    labels_a: pd.Series  # latent -> concept label (missing: unlabelled)
    labels_b: pd.Series

    def partner_of_b(self, latent_b: int) -> int | None:
        hits = self.pairs_a[self.pairs_b == latent_b]
        return int(hits[0]) if hits.size else None

    def partner_of_a(self, latent_a: int) -> int | None:
        hits = self.pairs_b[self.pairs_a == latent_a]
        return int(hits[0]) if hits.size else None


def _label(labels: pd.Series, latent: int) -> str | None:
    value = labels.get(latent)
    return value if isinstance(value, str) else None


def top_list(response: np.ndarray, responders: np.ndarray, labels: pd.Series, partner) -> list[dict]:
    """The responders with their response, concept label and partner on the other side (None: unpaired)."""
    return [{"latent": int(latent), "mean_abs_delta": float(response[latent]), "concept": _label(labels, latent),
             "paired_with": partner(int(latent))} for latent in responders]


def downstream_effect(later: LaterLayers, response_a: np.ndarray, response_b: np.ndarray,
                      null_responses_b: np.ndarray | None, n: int) -> dict:
    """A's and B's top responders at the later cell, their paired overlap and (with null responses
    [m, d_sae_b]) its p against the null transfers' responders."""
    responders_a, responders_b = top_responders(response_a, n), top_responders(response_b, n)
    observed = paired_overlap(responders_a, responders_b, later.pairs_a, later.pairs_b)
    result = {"layer_a": later.layer_a, "layer_b": later.layer_b, "hook_a": later.hook_a, "hook_b": later.hook_b,
              "n_responders": int(n), "top_a": top_list(response_a, responders_a, later.labels_a, later.partner_of_a),
              "top_b": top_list(response_b, responders_b, later.labels_b, later.partner_of_b),
              "overlap": observed}
    if null_responses_b is not None:
        partners = later.pairs_b[np.isin(later.pairs_a, responders_a)]  # B sides of pairs with an A responder
        null = np.array([np.isin(partners, top_responders(row, n)).sum() for row in np.asarray(null_responses_b)],
                        dtype=np.float64)
        result.update(overlap_p=permutation_p(float(observed), null), null_overlap=null_summary(null))
    return result
