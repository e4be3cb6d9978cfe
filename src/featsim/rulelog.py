"""Route a workflow job's output into its Snakemake `log:` file: the one log helper of every script."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def rule_log(path: str | os.PathLike) -> None:
    """Send this process's stdout, stderr and INFO-level logging to `path` (overwritten per job).

    Works at the descriptor level, so tqdm bars, library warnings and C-level prints (sae-lens prints a bar
    even with verbose=False; transformer-lens warns on construction) land in the log too.
    """
    log_path = Path(path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    with open(log_path, "w") as handle:
        os.dup2(handle.fileno(), sys.stdout.fileno())
        os.dup2(handle.fileno(), sys.stderr.fileno())
    sys.stdout.reconfigure(line_buffering=True)
    sys.stderr.reconfigure(line_buffering=True)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format=LOG_FORMAT, force=True)
