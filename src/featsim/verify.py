"""`featsim verify`: read every chunk of featsim stores and report the damaged, incomplete and orphaned ones.

Opening a store (featsim.stores) checks only metadata and the chunk listing, and readers check the
chunks a job reads; this module reads everything, through the same readers, so a store that passes
here passes in every job. Temporary paths `<target>.tmp-<pid>` of writers that are no longer running
are orphans (a killed job); `clean_orphans` removes them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from featsim.alignment import open_alignment
from featsim.correlation_result import open_correlation
from featsim.provenance import process_alive, remove_path, temp_target
from featsim.stores import (DamagedStoreError, IncompleteStoreError, StoreError, StoreKindError, open_acts,
                            open_codes, open_store, open_tokens, rebuild_advice)

PROBLEMS = ("damaged", "incomplete", "orphan", "missing")
"""Statuses that make `featsim verify` exit non-zero."""
SCAN_ROWS = 65536  # code rows read at a time: many values chunks per read, so no chunk is decoded twice


@dataclass(frozen=True)
class Finding:
    """What `verify` found at one path: a status (ok, old-format, damaged, incomplete, orphan, missing,
    removed, in-progress, not-a-store) and a message saying why and what to do."""

    path: Path
    status: str
    message: str = ""

    @property
    def is_problem(self) -> bool:
        return self.status in PROBLEMS


def _read_everything(path: Path, kind: str) -> None:
    """Read every chunk of a store through featsim's readers, which check checksums, invariants and finiteness."""
    if kind == "codes":
        for _ in open_codes(path).iter_chunks(SCAN_ROWS):
            pass
    elif kind == "activations":
        for _ in open_acts(path).iter_chunks():
            pass
    elif kind == "tokens":
        store = open_tokens(path)
        store.unmasked_positions()
        if store.has_spans:
            store.read_spans()
    elif kind == "alignment":
        open_alignment(path)
    elif kind == "correlation":
        open_correlation(path)
    else:
        raise DamagedStoreError(f"{path}: unknown store kind {kind!r}")


def verify_store(path: str | os.PathLike) -> Finding:
    """Full check of one store (every chunk read)."""
    path = Path(path)
    try:
        group = open_store(path)
        kind = str(group.attrs["kind"])
        _read_everything(path, kind)
    except IncompleteStoreError as exc:
        return Finding(path, "incomplete", str(exc))
    except StoreError as exc:
        return Finding(path, "damaged", str(exc))
    except StoreKindError as exc:
        status = "damaged" if path.suffix == ".zarr" else "not-a-store"
        return Finding(path, status, str(exc))
    if int(group.attrs.get("store_format", 1)) < 2:
        return Finding(path, "old-format", f"{kind} store written by an older featsim: every chunk read and its "
                                           "invariants hold, but it has no chunk checksums; to get them, "
                                           f"{rebuild_advice(path)}")
    return Finding(path, "ok", kind)


def check_temp(path: str | os.PathLike, clean_orphans: bool = False) -> Finding:
    """A temporary path of a writer: in progress (its process runs), or an orphan (removed if asked)."""
    path = Path(path)
    target, pid = temp_target(path)
    if pid != os.getpid() and process_alive(pid):
        return Finding(path, "in-progress", f"being written by process {pid} (running on this host)")
    if clean_orphans:
        remove_path(path)
        return Finding(path, "removed", f"orphaned temporary path of a killed writer of {target} (pid {pid})")
    return Finding(path, "orphan", f"temporary path of a writer of {target} that is gone (pid {pid} is not running "
                                   "on this host; killed?): remove it with `featsim verify --clean-orphans`")


def _is_store(path: Path) -> bool:
    return path.is_dir() and (path.suffix == ".zarr" or (path / "zarr.json").exists())


def _walk(root: Path) -> Iterator[Path]:
    """Stores and temporary paths under `root`, without descending into either (hidden directories skipped)."""
    for directory, subdirs, files in os.walk(root):
        here = Path(directory)
        keep = []
        for name in sorted(subdirs):
            child = here / name
            if temp_target(child) is not None or _is_store(child):
                yield child
            elif not name.startswith("."):
                keep.append(name)
        subdirs[:] = keep
        for name in sorted(files):
            if temp_target(here / name) is not None:
                yield here / name


def verify_paths(paths: list[str | os.PathLike], clean_orphans: bool = False) -> Iterator[Finding]:
    """Findings for each store or results tree in `paths`, one per store or temporary path found."""
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            yield Finding(path, "missing", "does not exist")
        elif temp_target(path) is not None:
            yield check_temp(path, clean_orphans)
        elif _is_store(path):
            yield verify_store(path)
        elif path.is_dir():
            for found in _walk(path):
                yield check_temp(found, clean_orphans) if temp_target(found) is not None else verify_store(found)
        else:
            yield Finding(path, "not-a-store", "a file, not a featsim store or results directory")
