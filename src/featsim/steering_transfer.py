"""Concept steering vectors in model A, their transfer to model B, and the nulls they are tested against.

- A concept's vector: the normalised mean of the (unit) decoder rows of A's concept latents.
- Transfer through the pairing: the normalised mean of the decoder rows of the B latents paired with them.
- Transfer through a linear map: v_A W, W the orthogonal Procrustes map fitted on the unit decoder rows of
  every pair except the concept's own (semi-orthogonal when the widths differ), normalised.
- Nulls: random unit directions (self-steering); the same transfer through random pairings of the same size
  (pairing: random B latents among the paired ones; Procrustes: maps fitted on shuffled pairs).
- Specificity: the concept x concept agreement matrix, diagonal dominance against a label-permutation null.

Every p-value is (b + 1) / (m + 1), b the null draws at least as extreme as the observed value.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from featsim.concept_labels import LABELLED


def concept_latents(labels_path, concepts) -> dict[str, np.ndarray]:
    """Concept id -> sorted latent ids labelled with it at one SAE layer.

    The single place that says where concept latents come from: the concept labels of
    featsim.concept_labels (`concepts/labels/{model}/L{l}.parquet`, status `labelled`), which read only
    the held-out rows and need no pairing: a pairing's junk list reaches steering only through its pairs.
    """
    table = pd.read_parquet(labels_path, columns=["latent", "concept", "status"])
    labelled = table[table["status"] == LABELLED]
    return {c: np.unique(labelled.loc[labelled["concept"] == c, "latent"].to_numpy(dtype=np.int64)) for c in concepts}


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (all-zero rows stay zero), float64."""
    matrix = np.asarray(matrix, dtype=np.float64)
    norms = np.linalg.norm(matrix, axis=-1, keepdims=True)
    return np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0)


class NoDirectionError(ValueError):
    """No steering direction can be made: no latent, rows that cancel out, a zero map, too few pairs to fit one."""


def mean_direction(decoder: np.ndarray, latents: np.ndarray) -> np.ndarray:
    """The normalised mean of the unit decoder rows of `latents` ([d]); a zero mean is an error."""
    latents = np.asarray(latents, dtype=np.int64)
    if latents.size == 0:
        raise NoDirectionError("a steering vector needs at least one latent")
    mean = unit_rows(decoder[latents]).mean(axis=0)
    norm = np.linalg.norm(mean)
    if not norm > 0:
        raise NoDirectionError(f"the decoder rows of latents {latents.tolist()} cancel out: no direction")
    return mean / norm


def procrustes_map(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """W [d_a, d_b] minimising ||source W - target||_F with orthonormal rows (d_a <= d_b) or columns:
    W = U V^T from the thin SVD source^T target = U S V^T (orthogonal Procrustes, Schönemann 1966)."""
    u, _, vt = np.linalg.svd(np.asarray(source, np.float64).T @ np.asarray(target, np.float64), full_matrices=False)
    return u @ vt


def _normalised(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    if np.any(norms == 0):
        raise NoDirectionError("a transferred vector is zero")
    return vectors / norms


@dataclass(frozen=True)
class TransferCell:
    """One layer cell of a comparison: both decoders and the pairs between them."""

    decoder_a: np.ndarray  # [d_sae_a, d_a]
    decoder_b: np.ndarray  # [d_sae_b, d_b]
    pairs_a: np.ndarray  # [n_pairs] A latents
    pairs_b: np.ndarray  # [n_pairs] B latents

    @classmethod
    def from_pairs(cls, decoder_a: np.ndarray, decoder_b: np.ndarray, pairs: pd.DataFrame) -> "TransferCell":
        return cls(np.asarray(decoder_a), np.asarray(decoder_b), pairs["a"].to_numpy(np.int64),
                   pairs["b"].to_numpy(np.int64))

    def partners(self, latents_a: np.ndarray) -> np.ndarray:
        """Sorted distinct B latents paired with `latents_a`."""
        return np.unique(self.pairs_b[np.isin(self.pairs_a, latents_a)])

    def pairing_transfer(self, latents_a: np.ndarray) -> np.ndarray:
        """The concept's vector carried through the pairing: mean direction of its partners in B."""
        return mean_direction(self.decoder_b, self.partners(latents_a))

    def pairing_null(self, n_latents: int, draws: int, rng: np.random.Generator) -> np.ndarray:
        """[draws, d_b]: mean directions of `n_latents` B latents drawn without replacement from the paired ones."""
        pool = np.unique(self.pairs_b)
        if n_latents > pool.size:
            raise ValueError(f"cannot draw {n_latents} of {pool.size} paired B latents")
        unit_b = unit_rows(self.decoder_b)
        chosen = np.stack([rng.choice(pool, size=n_latents, replace=False) for _ in range(draws)])
        return _normalised(unit_b[chosen].mean(axis=1))

    def _training_rows(self, latents_a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        keep = ~np.isin(self.pairs_a, latents_a)
        if keep.sum() < 2:
            raise NoDirectionError("fewer than two pairs outside the concept: no map to fit")
        return unit_rows(self.decoder_a[self.pairs_a[keep]]), unit_rows(self.decoder_b[self.pairs_b[keep]])

    def procrustes_transfer(self, vector_a: np.ndarray, latents_a: np.ndarray) -> np.ndarray:
        """`vector_a` mapped by the Procrustes map fitted on every pair but the concept's own, normalised."""
        source, target = self._training_rows(latents_a)
        return _normalised(vector_a @ procrustes_map(source, target))

    def procrustes_null(self, vector_a: np.ndarray, latents_a: np.ndarray, draws: int,
                        rng: np.random.Generator) -> np.ndarray:
        """[draws, d_b]: `vector_a` mapped by maps fitted on the same training pairs with the B side shuffled."""
        source, target = self._training_rows(latents_a)
        return _normalised(np.stack([vector_a @ procrustes_map(source, target[rng.permutation(len(target))])
                                     for _ in range(draws)]))


def random_directions(draws: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """[draws, width] directions uniform on the unit sphere."""
    return _normalised(rng.standard_normal((draws, width)))


# ---------------------------------------------------------------- statistics


TIE_TOLERANCE = 1e-5
"""Null values this close to the observed one (times max(1, |observed|)) count as ties, i.e. as extreme: the
effects are float32 and the same vector steered in another batch differs by rounding (a one-latent concept's
own partner is among its random pairings and must count as a tie, not fall just below)."""


def permutation_p(observed: float, null: np.ndarray, tolerance: float = TIE_TOLERANCE) -> float:
    """(b + 1) / (m + 1), b = null values >= observed up to `tolerance` (NaN null values count as not
    exceeding); NaN observed: NaN."""
    null = np.asarray(null, dtype=np.float64)
    if not math.isfinite(observed) or null.size == 0:
        return math.nan
    return float((np.sum(null >= observed - tolerance * max(1.0, abs(observed))) + 1) / (null.size + 1))


def null_summary(null: np.ndarray) -> dict:
    """Mean, sd and the 5/50/95 % quantiles of a null sample (finite values)."""
    values = np.asarray(null, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return {"n": 0}
    q05, q50, q95 = np.quantile(values, [0.05, 0.5, 0.95])
    return {"n": int(values.size), "mean": float(values.mean()), "sd": float(values.std(ddof=1)) if values.size > 1
            else math.nan, "q05": float(q05), "q50": float(q50), "q95": float(q95)}


def diagonal_dominance(matrix: np.ndarray) -> float:
    """Mean of the diagonal minus mean of the off-diagonal entries of a square matrix."""
    matrix = np.asarray(matrix, dtype=np.float64)
    n = matrix.shape[0]
    diagonal = np.trace(matrix) / n
    return float(diagonal - (matrix.sum() - np.trace(matrix)) / (n * (n - 1)))


@dataclass(frozen=True)
class DominanceTest:
    """Diagonal dominance of an agreement matrix against relabelling its columns."""

    statistic: float
    p_value: float
    null_mean: float
    null_sd: float
    n_concepts: int
    n_permutations: int
    min_p: float  # the smallest p this many concepts allows: 1 / n! (exact) or 1 / (m + 1)
    exact: bool  # every relabelling enumerated (n! <= permutations)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def dominance_test(matrix: np.ndarray, permutations: int, seed: int) -> DominanceTest:
    """Label-permutation test of diagonal dominance: the statistic with the columns (concept labels of A's
    effects) relabelled; the total is fixed, so this tests whether matching concepts agree more than others.
    Every relabelling when n! <= permutations (exact p, the identity included), else `permutations` random
    ones with p = (b + 1) / (m + 1)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    n = matrix.shape[0]
    if matrix.shape != (n, n) or n < 2 or not np.all(np.isfinite(matrix)):
        raise ValueError(f"diagonal dominance needs a finite square matrix of >= 2 concepts, got shape {matrix.shape}")
    observed = diagonal_dominance(matrix)
    exact = math.factorial(n) <= permutations
    if exact:
        orders = np.array(list(itertools.permutations(range(n))))
    else:
        orders = np.argsort(np.random.default_rng([seed, 0xD1A6]).random((permutations, n)), axis=1)
    traces = matrix[np.arange(n), orders].sum(axis=1)
    null = traces / n - (matrix.sum() - traces) / (n * (n - 1))
    if exact:
        p_value, min_p = float(np.mean(null >= observed - 1e-12 * max(1.0, abs(observed)))), 1 / len(orders)
    else:
        p_value, min_p = permutation_p(observed, null), 1 / (permutations + 1)
    return DominanceTest(statistic=observed, p_value=p_value, null_mean=float(null.mean()),
                         null_sd=float(null.std(ddof=1)), n_concepts=n, n_permutations=int(len(orders)),
                         min_p=min_p, exact=exact)
