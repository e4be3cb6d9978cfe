"""Benchmark: the permutation null of svcca and rsa at n = 5,000 pairs, d_A = 512, d_B = 768.

Targets (2-core CPU): 10,000 permutations of svcca in <= 200 s, of rsa in <= 300 s. Run fewer
permutations with --measure and the time is extrapolated to --permutations (setup counted once).
Decoder-like inputs: unit-norm rows with a power-law column spectrum (variance ~ j^-alpha) that
keeps ~400-550 SVCCA components per side, B sharing part of A's structure.

    python benchmarks/null.py                       # measure 200 permutations, extrapolate to 10,000
    python benchmarks/null.py --measure 10000       # the full run
    python benchmarks/null.py --metrics svcca --check 20   # also check 20 null values against the metric
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from featsim import _null_kernels as kernels
from featsim.metrics import METRICS
from featsim.null import _run_kernel, default_threads, permutation_batches, resolve_backend

TARGET_SECONDS = {"svcca": 200.0, "rsa": 300.0}


def decoder_like(n: int, d_a: int, d_b: int, alpha_a: float, alpha_b: float, seed: int):
    """Paired unit-norm rows [n, d_a], [n, d_b] with power-law spectra and a shared 64-dim part."""
    rng = np.random.default_rng(seed)
    shared = rng.standard_normal((n, 64))

    def side(d: int, alpha: float) -> np.ndarray:
        scales = np.arange(1, d + 1) ** (-alpha / 2)
        rotation = np.linalg.qr(rng.standard_normal((d, d)))[0]
        rows = (rng.standard_normal((n, d)) + shared @ rng.standard_normal((64, d)) * 0.05) * scales
        rows = rows @ rotation
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)

    return side(d_a, alpha_a), side(d_b, alpha_b)


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=5000, help="pairs")
    parser.add_argument("--d-a", type=int, default=512)
    parser.add_argument("--d-b", type=int, default=768)
    parser.add_argument("--alpha-a", type=float, default=1.25, help="column variance ~ j^-alpha on side A")
    parser.add_argument("--alpha-b", type=float, default=1.3)
    parser.add_argument("--metrics", nargs="+", default=["svcca", "rsa"], choices=sorted(METRICS))
    parser.add_argument("--permutations", type=int, default=10000, help="the target m to report")
    parser.add_argument("--measure", type=int, default=200, help="permutations actually run")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="float32", choices=["auto", "float32", "float64"])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--check", type=int, default=0, help="recompute this many null values with the metric")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    X, Y = decoder_like(args.n, args.d_a, args.d_b, args.alpha_a, args.alpha_b, args.seed)
    backend = resolve_backend(args.device)
    threads = args.threads or default_threads()
    for name in args.metrics:
        load_before = load_average()
        options = METRICS[name].resolve_options({})
        wall, cpu = time.perf_counter(), time.process_time()
        observed, kernel = kernels.prepare(name, X, Y, options, backend, args.precision,
                                           n_permutations=args.permutations)
        prepare_s, prepare_cpu_s = time.perf_counter() - wall, time.process_time() - cpu
        wall, cpu = time.perf_counter(), time.process_time()
        null = _run_kernel(kernel, args.n, args.measure, args.seed, threads, progress=False)
        null_s, null_cpu_s = time.perf_counter() - wall, time.process_time() - cpu
        per_perm, cpu_per_perm = null_s / args.measure, null_cpu_s / args.measure
        extrapolated = prepare_s + per_perm * args.permutations
        # Other jobs share the cores: CPU-seconds / threads estimates the wall time on idle cores.
        idle_estimate = (prepare_cpu_s + cpu_per_perm * args.permutations) / threads
        target = TARGET_SECONDS.get(name, float("inf"))
        record = {
            "metric": name, "n": args.n, "d_a": args.d_a, "d_b": args.d_b, **observed.details,
            "precision": getattr(kernel, "precision", "float64"), "device": str(kernel.backend.device),
            "backend": kernels.backend_name(kernel), "threads": threads,
            "prepare_s": round(prepare_s, 2), "prepare_cpu_s": round(prepare_cpu_s, 2),
            "measured_permutations": args.measure, "null_s": round(null_s, 2),
            "ms_per_permutation": round(1000 * per_perm, 2), "cpu_ms_per_permutation": round(1000 * cpu_per_perm, 2),
            "target_permutations": args.permutations, "extrapolated_s": round(extrapolated, 1),
            "idle_estimate_s": round(idle_estimate, 1), "target_s": target,
            "meets_target": extrapolated <= target, "idle_estimate_meets_target": idle_estimate <= target,
            "observed": observed.score, "null_mean": float(null.mean()),
            "load_before": load_before, "load_after": load_average(),
        }
        if args.check:
            perms = next(permutation_batches(args.n, args.check, args.seed, args.check))
            exact = np.array([METRICS[name](X, Y[p]) for p in perms])
            record["check_max_abs_error"] = float(np.abs(exact - null[: args.check]).max())
        print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
