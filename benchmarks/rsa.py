"""Memory and time of RSA and its permutation null at paper scale (n = 10,000 pairs, d = 512 / 768).

Method (exact): Pearson correlations of the distinct rows (one float64 Gram matrix, mirrored from its
upper triangle), the n (n - 1) / 2 upper-triangle values ranked with one sort order and blocked tie
groups (`featsim.metrics.centred_doubled_ranks`: the same integers as ranking the whole triangle at
once), int32 rank matrices; the null's cross terms run in the numba kernel (featsim._rank_kernels).
Figures on the shared 2-core machine, n = 10,000 (5e7 pairs), CPU seconds / peak RSS:
  before: rank_matrix of one side 45 s CPU, 3.6 GB; both sides + null kernel over 4 GB
  after:  rank_matrix of one side 19 s CPU, 1.3 GB; both sides 44-46 s CPU, + null kernel 2.9 GB peak,
          0.095-0.12 s CPU per permutation (float32 kernel), so 10,000 permutations 16-20 min of CPU.
Usage: python benchmarks/rsa.py [--pairs N] [--permutations M]
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np

from featsim import _null_kernels as kernels


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pairs", type=int, default=10_000)
    parser.add_argument("--permutations", type=int, default=32)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    X = rng.standard_normal((args.pairs, 512))
    Y = X[:, :384] @ rng.standard_normal((384, 768)) + rng.standard_normal((args.pairs, 768))
    cpu = time.process_time()
    observed, kernel = kernels.prepare("rsa", X, Y, {}, kernels.NumpyBackend(), "auto",
                                       n_permutations=10_000)
    setup = time.process_time() - cpu
    print(f"n = {args.pairs}: observed RSA {observed.score:.6f} ({kernel.precision} null kernel, {kernel.engine}); "
          f"ranks of both sides {setup:.1f} s CPU, peak RSS {peak_mb():.0f} MB")
    perms = np.stack([rng.permutation(args.pairs) for _ in range(args.permutations)]).astype(np.int32)
    kernel.scores(perms[:2])  # numba cache load
    cpu, wall = time.process_time(), time.perf_counter()
    for start in range(0, args.permutations, kernels.batch_size_for(kernel)):
        kernel.scores(perms[start:start + kernels.batch_size_for(kernel)])
    cpu, wall = (time.process_time() - cpu) / args.permutations, (time.perf_counter() - wall) / args.permutations
    print(f"null: {cpu:.3f} s CPU ({wall:.3f} s wall) per permutation -> 10,000 permutations "
          f"{cpu * 1e4 / 60:.0f} min CPU; peak RSS {peak_mb():.0f} MB")


if __name__ == "__main__":
    main()
