"""Route a workflow script's stderr (warnings, tqdm bars) and logging into its Snakemake `log:` file."""

from __future__ import annotations

import logging
import os
import sys

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def rule_log(path: str | os.PathLike) -> None:
    """Send this process's stderr and INFO-level logging to `path` (line-buffered, overwritten per job)."""
    sys.stderr = open(path, "w", buffering=1)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format=LOG_FORMAT, force=True)
