"""Describe any featsim output: what it is, its shape and layout, provenance, and a small sample."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from featsim.alignment import open_alignment
from featsim.correlation_result import open_correlation
from featsim.parquet import read_parquet_provenance
from featsim.provenance import temp_target
from featsim.stores import (StoreError, open_acts, open_codes, open_tokens, quiet_snakemake_timestamp, read_checked,
                            rebuild_advice)

PROVENANCE_KEYS = ("featsim_version", "config_hash", "created")


def _array_info(array: zarr.Array) -> dict:
    codecs = [type(c).__name__ for c in (*array.filters, array.serializer, *array.compressors) if c is not None]
    return {"shape": list(array.shape), "chunks": list(array.chunks), "dtype": str(array.dtype), "codecs": codecs}


def _sample(path: Path, group: zarr.Group, kind: str, name: str, n: int = 5) -> list:
    """The first n entries along each axis of an array (a chunk that cannot be decoded raises StoreError)."""
    shape = group[name].shape
    if shape == () or 0 in shape:
        return []
    return np.asarray(read_checked(path, group, kind, name, tuple(slice(0, n) for _ in shape))).tolist()


_OPENERS = {"codes": open_codes, "activations": open_acts, "tokens": open_tokens, "correlation": open_correlation,
            "alignment": open_alignment}


def _damage(path: Path, kind: str) -> str | None:
    """The cheap open-time checks of a finished store (chunks present, shapes as recorded); None if it passes.
    `featsim verify` reads every chunk."""
    opener = _OPENERS.get(kind)
    if opener is None:
        return None
    try:
        opener(path)
    except StoreError as exc:
        return str(exc)
    return None


def describe_zarr(path: Path) -> dict:
    """Describe a Zarr group written by featsim (or say why it is not a finished one or is damaged)."""
    with quiet_snakemake_timestamp():
        group = zarr.open_group(str(path), mode="r")
        arrays = {name: arr for name, arr in group.arrays()}
    attrs = dict(group.attrs)
    kind = attrs.get("kind", "foreign zarr group")
    info: dict[str, Any] = {"path": str(path), "kind": kind, "complete": bool(attrs.get("complete", False))}
    info["arrays"] = {name: _array_info(arr) for name, arr in sorted(arrays.items())}
    info["provenance"] = {k: v for k, v in attrs.items() if k not in ("kind", "complete")}
    if info["complete"] and temp_target(path) is None:
        problem = _damage(path, kind)
        if problem is not None:
            info["damaged"] = problem
            return info
    if kind == "codes" and info["complete"]:
        n_tokens, d_sae, nnz = attrs["n_tokens"], attrs["d_sae"], attrs["nnz"]
        info["shape"] = [n_tokens, d_sae]
        info["density"] = nnz / max(1, n_tokens * d_sae)
        info["mean_active_per_token"] = nnz / max(1, n_tokens)
        try:
            head = open_codes(path).read_rows(0, min(3, n_tokens))
        except StoreError as exc:
            info["damaged"] = str(exc)
            return info
        info["sample"] = [{"row": r, "latents": head[r].indices[:8].tolist(),
                           "values": np.round(head[r].data[:8].astype(float), 4).tolist()} for r in range(head.shape[0])]
    elif kind in ("tokens", "activations") and info["complete"]:
        name = "tokens" if kind == "tokens" else "acts"
        info["shape"] = list(arrays[name].shape)
        try:
            info["sample"] = _sample(path, group, kind, name, 4)
        except StoreError as exc:
            info["damaged"] = str(exc)
    elif info["complete"]:
        try:
            info["sample"] = {name: _sample(path, group, kind, name, 5) for name, arr in sorted(arrays.items())
                              if arr.ndim <= 2}
        except StoreError as exc:
            info["damaged"] = str(exc)
    return info


def describe_parquet(path: Path) -> dict:
    import pandas as pd

    df = pd.read_parquet(path)
    return {"path": str(path), "kind": "table (parquet)", "shape": list(df.shape), "columns": list(df.columns),
            "provenance": read_parquet_provenance(path), "sample": json.loads(df.head(3).to_json(orient="records"))}


def describe_csv(path: Path) -> dict:
    import pandas as pd

    df = pd.read_csv(path, comment="#")
    return {"path": str(path), "kind": "table (csv)", "shape": list(df.shape), "columns": list(df.columns),
            "sample": json.loads(df.head(3).to_json(orient="records"))}


def describe_json(path: Path) -> dict:
    content = json.loads(path.read_text())
    info = {"path": str(path), "kind": "record (json)"}
    if isinstance(content, dict):
        info["provenance"] = content.get("provenance", {})
        info["fields"] = {k: v for k, v in content.items() if k != "provenance" and not isinstance(v, (dict, list))}
    return info


def describe_npy(path: Path) -> dict:
    array = np.load(path, mmap_mode="r")
    return {"path": str(path), "kind": "array (npy)", "shape": list(array.shape), "dtype": str(array.dtype),
            "sample": np.asarray(array.reshape(-1)[:5]).tolist()}


def describe(path: str | Path) -> dict:
    """A JSON-ready description of any featsim output file or store."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if temp_target(path) is not None:
        info = {"path": str(path), "kind": "incomplete (temporary path of an interrupted write)", "complete": False}
        if (path / "zarr.json").exists():
            info.update({k: v for k, v in describe_zarr(path).items() if k in ("arrays",)})
        return info
    if path.is_dir():
        if (path / "zarr.json").exists():
            return describe_zarr(path)
        return {"path": str(path), "kind": "directory", "entries": sorted(p.name for p in path.iterdir())[:50]}
    suffix = path.suffix.lower()
    readers = {".parquet": describe_parquet, ".csv": describe_csv, ".json": describe_json, ".npy": describe_npy}
    if suffix not in readers:
        raise ValueError(f"{path}: featsim writes .zarr stores and .parquet/.csv/.json/.npy files; cannot inspect '{suffix}'")
    return readers[suffix](path)


def format_text(info: dict) -> str:
    """Human-readable rendering of `describe`."""
    lines = [f"{info['path']}", f"  kind: {info['kind']}"]
    if "complete" in info:
        lines.append(f"  complete: {info['complete']}"
                     + ("" if info["complete"] else f"  <- INCOMPLETE: {rebuild_advice(info['path'])}"))
    if "damaged" in info:
        lines.append(f"  DAMAGED: {info['damaged']}")
    for key in ("shape", "dtype", "density", "mean_active_per_token", "columns"):
        if key in info:
            lines.append(f"  {key}: {info[key]}")
    for name, arr in info.get("arrays", {}).items():
        lines.append(f"  array {name}: shape {arr['shape']} chunks {arr['chunks']} dtype {arr['dtype']} codecs {arr['codecs']}")
    if info.get("fields"):
        lines.append("  fields:")
        lines.extend(f"    {k}: {v}" for k, v in info["fields"].items())
    if info.get("provenance"):
        lines.append("  provenance:")
        lines.extend(f"    {k}: {v}" for k, v in info["provenance"].items())
    if "sample" in info:
        lines.append(f"  sample: {json.dumps(info['sample'], default=str)[:800]}")
    if "entries" in info:
        lines.append(f"  entries: {info['entries']}")
    return "\n".join(lines)
