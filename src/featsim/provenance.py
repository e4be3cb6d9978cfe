"""Provenance records and atomic writes: every result says where it came from, none is half-written."""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import glob
import os
import re
import shutil
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from featsim import __version__
from featsim.layout import PROVENANCE, sibling


def _canonical(obj: Any) -> Any:
    """JSON-ready, order-independent form of a config slice (numpy scalars and paths included)."""
    if isinstance(obj, dict):
        return {str(k): _canonical(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, (list, tuple)):
        return [_canonical(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    return obj


def config_hash(obj: Any) -> str:
    """Short sha256 of the canonical JSON of the config slice an output depends on."""
    text = json.dumps(_canonical(obj), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def make_provenance(config_slice: Any, **ids: Any) -> dict:
    """The provenance record stored with every output: version, config hash, creation time, ids."""
    record = {
        "featsim_version": __version__,
        "config_hash": config_hash(config_slice),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    record.update(_canonical(ids))
    return record


DIRECTORY_PROVENANCE = "provenance.json"
"""The provenance record inside a directory output (toy corpus, toy LM and SAE checkpoints)."""


def read_directory_provenance(directory: str | os.PathLike) -> dict:
    """The provenance record a directory output carries."""
    path = Path(directory) / DIRECTORY_PROVENANCE
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: {directory} was not written by featsim; rebuild it")
    return json.loads(path.read_text())


def remove_path(path: Path) -> None:
    """Remove a file, link or directory tree, if there is one."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


TEMP_NAME = re.compile(r"^(?P<target>.+)\.tmp-(?P<pid>\d+)$")
"""Name of the temporary sibling `<target>.tmp-<pid>` that `atomic_path` writes before renaming."""


def temp_target(path: str | os.PathLike) -> tuple[Path, int] | None:
    """(final path, writer pid) of a temporary path written by `atomic_path`; None for any other path."""
    match = TEMP_NAME.match(Path(path).name)
    return (Path(path).with_name(match["target"]), int(match["pid"])) if match else None


def process_alive(pid: int) -> bool:
    """Whether a process with this id runs on this host (another user's process counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_orphaned_temp(path: str | os.PathLike) -> bool:
    """A temporary path of `atomic_path` whose writer process is gone (killed before it could clean up)."""
    owner = temp_target(path)
    return owner is not None and owner[1] != os.getpid() and not process_alive(owner[1])


def remove_orphaned_temps(final: str | os.PathLike) -> list[Path]:
    """Remove the temporary siblings of `final` left by dead writers; return what was removed.

    Called when a new writer of `final` starts: Snakemake never runs two jobs writing one output at
    once, so even on a cluster (where the pid test, of this host, says nothing about other nodes) the
    earlier writer of that target is gone.
    """
    final = Path(final)
    if not final.parent.is_dir():
        return []
    removed = []
    for candidate in final.parent.glob(f"{glob.escape(final.name)}.tmp-*"):
        owner = temp_target(candidate)
        if owner is not None and owner[0] == final and is_orphaned_temp(candidate):
            remove_path(candidate)
            removed.append(candidate)
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling of `path`; rename it onto `path` only if the block succeeds.

    Works for files and directories; an interrupted or failing writer leaves no file at `path`.
    Temporary siblings of the same target left by killed writers are removed first.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_orphaned_temps(final)
    tmp = final.with_name(f"{final.name}.tmp-{os.getpid()}")
    remove_path(tmp)
    try:
        yield tmp
    except BaseException:
        remove_path(tmp)
        raise
    if not tmp.exists():
        raise FileNotFoundError(f"atomic write of {final} produced nothing at {tmp}")
    if final.is_dir() and not final.is_symlink():
        shutil.rmtree(final)
    os.replace(tmp, final)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON atomically (NaN written as null so any JSON reader can load it)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(jsonable(obj), indent=2, allow_nan=False) + "\n")


def jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    """Save a numpy array atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, np.asarray(array))


def write_table(path: str | os.PathLike, table, config_slice: Any, column_docs: Mapping[str, str],
                extra: Mapping[str, Any] | None = None, *, ids: Mapping[str, Any]) -> None:
    """A table as CSV, written atomically, with its provenance (`config_slice`, `ids`), row count, column
    descriptions and `extra` fields in the `.provenance.json` beside it (a CSV has no metadata slot)."""
    record = make_provenance(config_slice, **ids)
    record["n_rows"] = int(len(table))
    record.update(extra or {})
    record["columns"] = {column: column_docs[column] for column in table.columns if column in column_docs}
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)
    write_json(sibling(path, PROVENANCE), record)
