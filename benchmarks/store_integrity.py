"""Cost of store integrity on a codes store: crc32c chunk checksums and every chunk written (write), and
the checks of the readers (read), against the store layout and reads featsim used before (zstd only,
no checks).

Write: CodesWriter as the codes rule uses it, in blocks of 8192 rows. Read: the correlate stage's
streaming read (65536 rows at a time). Verify: `featsim verify` on the store. Each timing is the best
of --repeats. Usage: python benchmarks/store_integrity.py [--tokens N] [--latents D] [--k K]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import numpy as np
import scipy.sparse as sp
import zarr

from featsim import stores
from featsim.verify import verify_store

BLOCK_ROWS = 8192
READ_ROWS = 65536


def topk_blocks(n_tokens: int, d_sae: int, k: int, seed: int) -> list[sp.csr_matrix]:
    """TopK-like codes: k distinct random latents per token, exponential values."""
    rng = np.random.default_rng(seed)
    blocks = []
    for start in range(0, n_tokens, BLOCK_ROWS):
        rows = min(BLOCK_ROWS, n_tokens - start)
        columns = np.sort(rng.random((rows, d_sae)).argpartition(k, axis=1)[:, :k] if d_sae <= 4096 else
                          rng.integers(0, d_sae, size=(rows, k)), axis=1)
        values = rng.exponential(1.0, size=(rows, k)).astype(np.float32)
        blocks.append(sp.csr_matrix((values.ravel(), columns.ravel(), np.arange(rows + 1) * k), shape=(rows, d_sae)))
    return blocks


@contextmanager
def previous_layout():
    """Arrays as featsim made them before store_format 2: zarr's default zstd, all-zero chunks skipped."""
    with mock.patch.object(stores, "create_checked_array", lambda group, name, **kw: group.create_array(name, **kw)):
        yield


def write(path: Path, blocks: list[sp.csr_matrix], d_sae: int) -> None:
    with stores.CodesWriter(path, d_sae) as writer:
        for block in blocks:
            writer.append(block)


def read_unchecked(path: Path) -> int:
    """The reads featsim did before (CodesStore.read_rows without checks), as CSR blocks."""
    group = zarr.open_group(str(path), mode="r")
    n_tokens, d_sae, total = int(group.attrs["n_tokens"]), int(group.attrs["d_sae"]), 0
    for start in range(0, n_tokens, READ_ROWS):
        stop = min(start + READ_ROWS, n_tokens)
        indptr = group["indptr"][start:stop + 1]
        lo, hi = int(indptr[0]), int(indptr[-1])
        block = sp.csr_matrix((group["values"][lo:hi], group["indices"][lo:hi], indptr - lo),
                              shape=(stop - start, d_sae))
        total += block.nnz
    return total


def read_checked(path: Path) -> int:
    return sum(chunk.nnz for chunk in stores.open_codes(path).iter_chunks(READ_ROWS))


def best(fn, repeats: int) -> tuple[float, float]:
    """Least wall-clock and least CPU time (all threads) over `repeats` calls: CPU time is the steadier
    measure on a shared machine."""
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return min(walls), min(cpus)


def line(label: str, before: tuple[float, float], after: tuple[float, float], after_label: str) -> str:
    return (f"  {label:6} before {before[0]:7.3f} s wall {before[1]:7.3f} s cpu   {after_label:14} "
            f"{after[0]:7.3f} s wall {after[1]:7.3f} s cpu   (cpu {100 * (after[1] / before[1] - 1):+.0f}%)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, default=65536)
    parser.add_argument("--latents", type=int, default=256)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    blocks = topk_blocks(args.tokens, args.latents, args.k, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        old, new = Path(tmp) / "old.zarr", Path(tmp) / "new.zarr"
        with previous_layout():
            t_write_old = best(lambda: write(old, blocks, args.latents), args.repeats)
        t_write_new = best(lambda: write(new, blocks, args.latents), args.repeats)
        t_read_old = best(lambda: read_unchecked(old), args.repeats)
        t_read_new = best(lambda: read_checked(new), args.repeats)
        t_open = best(lambda: stores.open_codes(new), args.repeats)
        t_verify = best(lambda: verify_store(new), args.repeats)
        size = {p.name: sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) for p in (old, new)}
    nnz = args.tokens * args.k
    print(f"codes store {args.tokens} tokens x {args.latents} latents, k={args.k} ({nnz} entries); "
          f"best of {args.repeats}")
    print(f"  size   before {size['old.zarr'] / 1e6:.1f} MB, with checksums {size['new.zarr'] / 1e6:.1f} MB")
    print(line("write", t_write_old, t_write_new, "with checksums"))
    print(line("read", t_read_old, t_read_new, "checked"))
    print(f"  open (chunk listing, shapes) {t_open[0]:.3f} s; featsim verify {t_verify[0]:.3f} s wall")


if __name__ == "__main__":
    main()
