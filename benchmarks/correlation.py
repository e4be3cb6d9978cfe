"""Benchmark featsim.correlate.max_correlation on synthetic TopK codes.

Codes: `--k` active latents per token, drawn with log-normal firing frequencies (a few latents fire on
a large share of tokens, most rarely), positive magnitudes; half of each B token's latents are planted
copies (through a fixed permutation) of A's, so the best-partner recovery rate is printed as a sanity
check. Prints wall time of the correlation (compile excluded, after a tiny warm-up call) and peak RSS.

Target (issue 4): 1M tokens x 32,768 x 32,768 latents, k=32, both directions with top-8 partners,
<= 15 s wall and <= 4 GB peak RSS on the 2-core development machine.
Measured there (2 numba threads, cores shared with other jobs, load average 4-6): 1M tokens
14.1-16.1 s wall, 9.0-9.5 s CPU, 1.45 GB peak RSS (the generated inputs included); 100k tokens
4.8 s wall, 3.2 s CPU, 0.5 GB.

    python benchmarks/correlation.py --tokens 1000000 --latents-a 32768 --latents-b 32768
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import time

import numba
import numpy as np
import scipy.sparse as sp


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # ru_maxrss is in KiB on Linux


def firing_weights(n_latents: int, rng: np.random.Generator, sigma: float) -> np.ndarray:
    """Log-normal relative firing frequencies, normalised to sum to 1."""
    weights = rng.lognormal(mean=0.0, sigma=sigma, size=n_latents)
    return weights / weights.sum()


def topk_codes(n_tokens: int, weights: np.ndarray, k: int, rng: np.random.Generator,
               planted: np.ndarray | None = None, chunk: int = 100_000) -> sp.csr_matrix:
    """CSR [n_tokens, n_latents] float32 with up to k distinct active latents per token.

    `planted` [n_tokens, m]: latent ids that must be active first in each row (the rest are drawn).
    """
    cumulative = np.cumsum(weights)
    n_latents = weights.size
    indptr_parts, index_parts, value_parts = [np.zeros(1, np.int64)], [], []
    total = 0
    for start in range(0, n_tokens, chunk):
        stop = min(start + chunk, n_tokens)
        draws = np.searchsorted(cumulative, rng.random((stop - start, k + k // 2)) * cumulative[-1])
        draws = np.minimum(draws, n_latents - 1)
        if planted is not None:
            draws = np.concatenate([planted[start:stop], draws], axis=1)
        order = np.argsort(draws, axis=1, kind="stable")
        sorted_draws = np.take_along_axis(draws, order, axis=1)
        repeat_sorted = np.zeros_like(sorted_draws, dtype=bool)
        repeat_sorted[:, 1:] = sorted_draws[:, 1:] == sorted_draws[:, :-1]
        repeat = np.empty_like(repeat_sorted)
        np.put_along_axis(repeat, order, repeat_sorted, axis=1)
        keep = ~repeat & (np.cumsum(~repeat, axis=1) <= k)  # first k distinct draws, in draw order
        rows, cols = np.nonzero(keep)
        latents = draws[rows, cols]
        counts = np.bincount(rows, minlength=stop - start)
        indptr_parts.append(np.cumsum(counts) + total)
        total += latents.size
        index_parts.append(latents.astype(np.int32))
        value_parts.append(rng.exponential(1.0, latents.size).astype(np.float32) + 0.1)
    indptr = np.concatenate(indptr_parts)
    csr = sp.csr_matrix((np.concatenate(value_parts), np.concatenate(index_parts), indptr),
                        shape=(n_tokens, n_latents))
    return csr  # rows in draw order (so the first entries of a row are a random subset of it)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=100_000)
    parser.add_argument("--latents-a", type=int, default=32_768)
    parser.add_argument("--latents-b", type=int, default=32_768)
    parser.add_argument("--k", type=int, default=32, help="active latents per token")
    parser.add_argument("--top-k", type=int, default=8, help="partners kept per latent")
    parser.add_argument("--sigma", type=float, default=1.5, help="log-normal sigma of firing frequencies")
    parser.add_argument("--min-active", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from featsim.correlate import max_correlation

    logging.basicConfig(level=logging.INFO, format="%(message)s")  # the load / correlate split

    rng = np.random.default_rng(args.seed)
    warm_a = topk_codes(500, firing_weights(64, rng, args.sigma), 4, rng)
    start = time.perf_counter()
    max_correlation(warm_a, warm_a, top_k=args.top_k, device=args.device)
    warm_up = time.perf_counter() - start

    start = time.perf_counter()
    weights_a = firing_weights(args.latents_a, rng, args.sigma)
    codes_a = topk_codes(args.tokens, weights_a, args.k, rng)
    plant = rng.permutation(args.latents_b)[:args.latents_a] if args.latents_b >= args.latents_a else None
    planted = None
    if plant is not None:  # B fires plant[a] where A fires a, for a random half (draw order) of each A row
        first = np.add.outer(codes_a.indptr[:-1], np.arange(args.k // 2))
        first = np.minimum(first, codes_a.indptr[1:, None] - 1)
        planted = plant[codes_a.indices[first]]
    codes_b = topk_codes(args.tokens, firing_weights(args.latents_b, rng, args.sigma), args.k, rng, planted)
    del planted
    codes_a.sort_indices()
    codes_b.sort_indices()
    generate = time.perf_counter() - start
    rss_inputs = peak_rss_gb()

    start, cpu_start = time.perf_counter(), time.process_time()
    result = max_correlation(codes_a, codes_b, top_k=args.top_k, min_active=args.min_active, device=args.device)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start

    fires_a = np.diff(codes_a.indptr)
    frequency = result.n_active_a / args.tokens
    print(f"tokens={args.tokens} d_a={args.latents_a} d_b={args.latents_b} active/token A={fires_a.mean():.1f} "
          f"B={np.diff(codes_b.indptr).mean():.1f} top_k={args.top_k} engine={result.engine} "
          f"threads={os.cpu_count()} load1={os.getloadavg()[0]:.2f}")
    print(f"firing frequency A: max {frequency.max():.4f} median {np.median(frequency):.2e} "
          f"dead {int((result.n_active_a == 0).sum())}; co-firing products "
          f"{float(np.dot(fires_a.astype(float), np.diff(codes_b.indptr))):.3e}")
    print(f"warm-up (numba load/compile) {warm_up:.1f} s; generate {generate:.1f} s; "
          f"peak RSS after inputs {rss_inputs:.2f} GB")
    if plant is not None:
        used = result.used_a & result.used_b[plant] & (result.n_active_a >= 100)
        recovered = result.best_b_for_a[used] == plant[used]
        print(f"planted partners recovered (A -> B best, A latents firing >= 100 times): "
              f"{recovered.mean():.4f} of {used.sum()}")
    print(f"max_correlation wall {wall:.2f} s (CPU {cpu:.2f} s over {numba.get_num_threads()} threads, "
          f"load1 {os.getloadavg()[0]:.2f}); peak RSS {peak_rss_gb():.2f} GB")


if __name__ == "__main__":
    main()
