"""Speed/memory of the labels stage: streamed top-k over a code store and the text of the top positions.

Target: 32k latents x 1M tokens (L0 64) in minutes with memory bounded by the chunk size and the
[d_sae, top_k] buffers. Usage: python benchmarks/bench_labels.py [--tokens N] [--latents F] [--l0 L]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from featsim.labels import LabelsConfig, label_latents
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
    parser.add_argument("--l0", type=int, default=64)
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
        started = time.perf_counter()
        table = label_latents(open_codes(tmp / "codes.zarr"), open_tokens(tmp / "tokens.zarr"), tokenizer,
                              LabelsConfig())
        elapsed = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"labels: {n_seq * args.context} tokens x {args.latents} latents (L0 {args.l0}): {elapsed:.1f} s, "
          f"peak RSS {peak_mb:.0f} MB, {sum(map(len, table['top_positions']))} top positions")


if __name__ == "__main__":
    main()
