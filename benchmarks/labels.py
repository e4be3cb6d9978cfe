"""Speed/memory of the labels stage: streamed top-k over a code store and the text of the top positions.

Target (#17): 32k latents x 1M tokens, TopK k = 32 codes, top_k 20, at most 15 s. CPU seconds on the
shared 2-core machine (wall time there is 2-3x CPU when other jobs run):
  before (vectorised sorts + merge, numpy slices per position):  stats 9.4 s, labels 21-23 s CPU
  after (numba heap pass, list slices, collector paused):          stats 2.8 s, labels 8.5 s CPU
  (stats includes ~1.6 s of reading and decompressing the code store: the floor of one pass).
Usage: python benchmarks/labels.py [--tokens N] [--latents D] [--l0 L] [--top-k K]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from featsim.labels import LabelsConfig, label_latents, latent_stats
from featsim.stores import CodesWriter, open_codes, open_tokens, write_tokens
from featsim.toy.tokenizer import build_word_tokenizer


def synthetic_codes(path: Path, n_tokens: int, d_sae: int, l0: int, seed: int) -> None:
    """TopK-like codes: `l0` random latents per token (Zipf-skewed), exponential values, written in chunks."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, d_sae + 1) ** 0.7
    weights /= weights.sum()
    with CodesWriter(path, d_sae) as writer:
        for start in range(0, n_tokens, 65536):
            rows = min(65536, n_tokens - start)
            columns = rng.choice(d_sae, size=(rows, l0), p=weights)
            values = rng.exponential(1.0, size=(rows, l0)).astype(np.float32)
            block = sp.csr_matrix((values.ravel(), (np.repeat(np.arange(rows), l0), columns.ravel())),
                                  shape=(rows, d_sae))
            writer.append(block)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, default=1_000_000)
    parser.add_argument("--latents", type=int, default=32768)
    parser.add_argument("--l0", type=int, default=32)
    parser.add_argument("--top-k", type=int, default=LabelsConfig().top_k)
    parser.add_argument("--context", type=int, default=64)
    args = parser.parse_args()
    words = [f"w{i}" for i in range(1000)]
    tokenizer = build_word_tokenizer(words)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        n_seq = args.tokens // args.context
        tokens = rng.integers(4, 4 + len(words), size=(n_seq, args.context)).astype(np.int32)
        mask = np.ones_like(tokens, dtype=bool)
        write_tokens(tmp / "tokens.zarr", tokens, mask, {})
        started = time.perf_counter()
        synthetic_codes(tmp / "codes.zarr", n_seq * args.context, args.latents, args.l0, seed=1)
        print(f"wrote synthetic codes in {time.perf_counter() - started:.1f} s")
        codes, tokens = open_codes(tmp / "codes.zarr"), open_tokens(tmp / "tokens.zarr")
        latent_stats(codes, 2, rows_per_chunk=4096, progress=False)  # numba cache load / first compile
        wall, cpu = time.perf_counter(), time.process_time()
        latent_stats(codes, args.top_k, progress=False)
        stats_wall, stats_cpu = time.perf_counter() - wall, time.process_time() - cpu
        wall, cpu = time.perf_counter(), time.process_time()
        table = label_latents(codes, tokens, tokenizer, LabelsConfig(top_k=args.top_k), progress=False)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{n_seq * args.context} tokens x {args.latents} latents (L0 {args.l0}), top_k {args.top_k}, "
          f"{sum(map(len, table['top_positions']))} top positions")
    print(f"  top-k and stats (one pass over the codes): {stats_cpu:.1f} s CPU, {stats_wall:.1f} s wall")
    print(f"  whole labels table (stats + text):          {cpu:.1f} s CPU, {wall:.1f} s wall; "
          f"peak RSS {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
