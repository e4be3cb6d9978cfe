"""Benchmark: exact null moments (featsim.null_moments) against drawing permutations, at n = 2,000 / 10,000.

For cka, rsa and mutual_knn: the time of the exact permutation mean and variance (after the
decomposition / ranks / neighbour lists the null needs anyway, timed apart as `setup`), and the
measured cost per permutation of the fast null kernel, extrapolated to 10,000 draws and to the draws a
Pythia-sized family needs (1/(m+1) < alpha / family). Also checks the measured draws against the
exact moments (mean and sd within Monte Carlo error). Inputs: benchmarks/null.py's decoder-like rows.

    python benchmarks/null_moments.py                          # n = 2,000 and 10,000, d = 512 / 768
    python benchmarks/null_moments.py --n 2000 --metrics cka    # one size, one metric
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from null import decoder_like, load_average  # noqa: E402  (benchmarks/null.py)

from featsim import _null_kernels as kernels  # noqa: E402
from featsim import metrics as m  # noqa: E402
from featsim import null_moments as nm  # noqa: E402
from featsim.null import _run_kernel, default_threads  # noqa: E402
from featsim.null_tail import fit_tail  # noqa: E402


def timed(function, *args):
    """(result, wall seconds, CPU seconds) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = function(*args)
    return result, time.perf_counter() - wall, time.process_time() - cpu


def exact_moments(name: str, X: np.ndarray, Y: np.ndarray, k: int):
    """(moments, setup wall s, moments wall s, moments CPU s): setup is what the null kernel computes anyway."""
    if name == "cka":
        (sides, setup_s, _) = timed(lambda: (m.centred_scores(X), m.centred_scores(Y)))
        denominator = m.cka_denominator(*sides)
        moments, wall, cpu = timed(nm.cka_moments, sides[0], sides[1], denominator)
    elif name == "rsa":
        (ranks, setup_s, _) = timed(lambda: (m.rank_matrix(X), m.rank_matrix(Y)))
        moments, wall, cpu = timed(nm.rsa_moments, ranks[0].matrix, ranks[1].matrix, ranks[0].norm * ranks[1].norm)
        del ranks
    else:
        (lists, setup_s, _) = timed(lambda: (m.knn_indices(X, k)[0], m.knn_indices(Y, k)[0]))
        moments, wall, cpu = timed(nm.mutual_knn_moments, *lists)
    return moments, setup_s, wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, nargs="+", default=[2000, 10000], help="pairs")
    parser.add_argument("--d-a", type=int, default=512)
    parser.add_argument("--d-b", type=int, default=768)
    parser.add_argument("--metrics", nargs="+", default=["cka", "rsa", "mutual_knn"],
                        choices=["cka", "rsa", "mutual_knn"])
    parser.add_argument("--measure", type=int, default=32, help="permutations actually drawn per metric")
    parser.add_argument("--precision", default="float32", choices=["float32", "float64"])
    parser.add_argument("--family", type=int, default=300, help="cells x metrics in the Holm family (Pythia: 60 x 5)")
    parser.add_argument("--alpha", type=float, default=0.01)
    parser.add_argument("--k", type=int, default=10, help="mutual_knn neighbours")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    threads = args.threads or default_threads()
    needed = int(np.ceil(args.family / args.alpha))  # 1/(m+1) < alpha / family

    for n in args.n:
        X, Y = decoder_like(n, args.d_a, args.d_b, 1.25, 1.3, seed=0)
        for name in args.metrics:
            load_before = load_average()
            moments, setup_s, moments_s, moments_cpu_s = exact_moments(name, X, Y, args.k)
            options = {"k": args.k} if name == "mutual_knn" else {}
            (_, kernel), prepare_s, _ = timed(kernels.prepare, name, X, Y, options, kernels.NumpyBackend(),
                                              args.precision, kernels.AutoPrecision(), needed)
            null, null_s, null_cpu_s = timed(_run_kernel, kernel, n, args.measure, 0, threads, False)
            tail, tail_s, _ = timed(fit_tail, float(null.max()), null, moments, False)
            per_permutation = null_s / args.measure
            record = {
                "metric": name, "n": n, "d_a": args.d_a, "d_b": args.d_b, "threads": threads,
                "precision": getattr(kernel, "precision", "float64"), "backend": kernels.backend_name(kernel),
                "setup_s": round(setup_s, 2), "exact_moments_s": round(moments_s, 4),
                "exact_moments_cpu_s": round(moments_cpu_s, 4), "tail_fit_s": round(tail_s, 4),
                "ms_per_permutation": round(1000 * per_permutation, 2),
                "cpu_ms_per_permutation": round(1000 * null_cpu_s / args.measure, 2),
                "permutations_10k_s": round(10_000 * per_permutation, 1),
                "family_needs_m": needed, "family_m_s": round(needed * per_permutation, 1),
                "exact_mean": moments.mean, "exact_std": moments.std,
                "draws_mean": float(null.mean()), "draws_std": float(null.std(ddof=1)),
                "mean_error_in_se": float((null.mean() - moments.mean) / (moments.std / np.sqrt(null.size))),
                "measured_permutations": args.measure, "skew_of_draws": tail.skew,
                "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
                "load_before": load_before, "load_after": load_average(),
            }
            print(json.dumps(record), flush=True)
            del kernel, null


if __name__ == "__main__":
    main()
