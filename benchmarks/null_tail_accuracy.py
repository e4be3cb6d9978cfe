"""Accuracy of the Pearson III tail p (featsim.null_tail) far below 1/(m+1), conditional on one data set.

For each null: draw N re-pairings with the fast float64 kernel, fit the tail from the exact moments and
the skewness of the first `--skew-draws` of them, and report, for each level a, the share of the N draws
whose p_tail is at most a, divided by a (1 = exact; < 1 conservative), beside the same ratio for a normal
tail from z alone. Gaussian sides of 6 and 8 columns, the first column of X scaled 3x (skewed nulls).

    python benchmarks/null_tail_accuracy.py                  # the README table (400,000 draws per null)
    python benchmarks/null_tail_accuracy.py --draws 100000   # quicker, noisier at 1e-5
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from scipy.special import ndtri

from featsim import _null_kernels as kernels
from featsim.null_tail import pearson3_sf, skewness

NULLS = [("cka", 30, {}), ("rsa", 30, {}), ("cka", 200, {}), ("rsa", 100, {}), ("mutual_knn", 60, {"k": 5})]
LEVELS = (1e-2, 1e-3, 1e-4, 1e-5)


def tail_quantile(level: float, mean: float, std: float, skew: float) -> float:
    """The value whose Pearson III tail probability is `level` (bisection; the tail falls with the value)."""
    low, high = mean, mean + 60 * std
    for _ in range(200):
        middle = (low + high) / 2
        low, high = (middle, high) if pearson3_sf(middle, mean, std, skew) > level else (low, middle)
    return high


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--draws", type=int, default=400_000)
    parser.add_argument("--skew-draws", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    for name, n, options in NULLS:
        X, Y = rng.standard_normal((n, 6)), rng.standard_normal((n, 8))
        X[:, 0] *= 3
        _, kernel = kernels.prepare(name, X, Y, options, kernels.NumpyBackend(), "float64", n_permutations=args.draws)
        perms = np.argsort(rng.random((args.draws, n)), axis=1)
        null = np.concatenate([kernel.scores(perms[i:i + 2000]) for i in range(0, args.draws, 2000)])
        moments = kernel.moments
        skew = skewness(null[:args.skew_draws], moments)
        ratios = {}
        for level in LEVELS:
            pearson = np.mean(null >= tail_quantile(level, moments.mean, moments.std, skew)) / level
            normal = np.mean(null >= moments.mean - moments.std * ndtri(level)) / level
            ratios[f"{level:g}"] = {"pearson3": round(float(pearson), 2), "normal": round(float(normal), 2)}
        print(json.dumps({"metric": name, "n": n, "draws": args.draws, "skew": round(skew, 3),
                          "skew_all_draws": round(skewness(null, moments), 3), "share_over_level": ratios}), flush=True)


if __name__ == "__main__":
    main()
