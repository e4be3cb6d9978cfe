"""Send a rule's stdout/stderr (tqdm bars, library warnings, C-level prints) into its log file."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def output_to_log(path: str | os.PathLike) -> Iterator[None]:
    """Redirect file descriptors 1 and 2 into `path` (appending) for the duration of the block.

    Works at the descriptor level, so loggers and tqdm bars created before or inside the block land
    in the log too (sae-lens prints a bar even with verbose=False; transformer-lens warns on construction).
    """
    log_path = Path(path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log_path, "a") as handle:
        os.dup2(handle.fileno(), 1)
        os.dup2(handle.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
