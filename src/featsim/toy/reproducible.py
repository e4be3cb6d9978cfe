"""Torch settings for reproducible toy training, restored afterwards so callers (and tests) are unaffected."""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch


@contextlib.contextmanager
def reproducible_torch(threads: int) -> Iterator[None]:
    """Run the block on `threads` intra-op threads with deterministic algorithms, then restore both.

    With the same thread count, CPU training is then bit-reproducible (checked for toy LMs and SAEs).
    """
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    previous_threads = torch.get_num_threads()
    previous_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(previous_threads)
        torch.use_deterministic_algorithms(previous_deterministic)
