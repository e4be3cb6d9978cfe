"""Zarr v3 stores for tokens, dense activations and sparse SAE codes.

Every store is a group whose attrs hold `kind`, provenance and `complete: true`, written last; it is
built at a temporary path and renamed into place, so a store that exists is a finished one. Readers
refuse incomplete or foreign stores and iterate in row chunks, never loading a whole store to iterate.

Row convention: activation and code stores hold only the unmasked token positions, in row-major order
of `tokens.zarr`; row i is flat position `TokenStore.unmasked_positions()[i]`.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import scipy.sparse as sp
import zarr

from featsim.provenance import _jsonable, atomic_path

STORE_KINDS = ("tokens", "activations", "codes", "correlation")
DEFAULT_CHUNK_ROWS = 8192


class IncompleteStoreError(RuntimeError):
    """The store was not finished (interrupted write): rerun the rule that makes it."""


class StoreKindError(ValueError):
    """The path is not a featsim store of the expected kind."""


@contextlib.contextmanager
def atomic_store(path: str | os.PathLike, kind: str, attrs: dict | None = None) -> Iterator[zarr.Group]:
    """Create a store at a temporary path; on success write attrs, `complete` last, and rename."""
    if kind not in STORE_KINDS:
        raise ValueError(f"unknown store kind {kind!r}; expected one of {STORE_KINDS}")
    with atomic_path(path) as tmp:
        group = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        group.attrs.update({"kind": kind, "complete": False})
        yield group
        group.attrs.update(_jsonable(dict(attrs or {})))
        group.attrs["complete"] = True


def open_store(path: str | os.PathLike, kind: str | None = None) -> zarr.Group:
    """Open a finished featsim store read-only, checking its kind and completeness."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no store at {path}")
    try:
        with warnings.catch_warnings():  # Snakemake drops a .snakemake_timestamp file into directory outputs
            warnings.filterwarnings("ignore", message=".*snakemake_timestamp.*")
            group = zarr.open_group(str(path), mode="r")
    except Exception as exc:  # zarr raises several types for a non-group path
        raise StoreKindError(f"{path} is not a Zarr group ({exc})") from exc
    found = group.attrs.get("kind")
    if found is None:
        raise StoreKindError(f"{path} is not a featsim store (no 'kind' attribute)")
    if not group.attrs.get("complete", False):
        raise IncompleteStoreError(
            f"{path} is an incomplete {found} store (its writer was interrupted); delete it and rerun "
            "the workflow (snakemake --rerun-incomplete)"
        )
    if kind is not None and found != kind:
        raise StoreKindError(f"{path} is a {found} store, expected a {kind} store")
    return group


def _row_chunks(n_rows: int, rows: int) -> Iterator[tuple[int, int]]:
    for start in range(0, n_rows, rows):
        yield start, min(start + rows, n_rows)


# ---------------------------------------------------------------- tokens


def write_tokens(path: str | os.PathLike, tokens: np.ndarray, mask: np.ndarray, attrs: dict | None = None) -> None:
    """Write token ids [n_seq, ctx] and the keep-mask [n_seq, ctx] (True = counted as data)."""
    tokens = np.asarray(tokens)
    mask = np.asarray(mask, dtype=bool)
    if tokens.ndim != 2 or tokens.shape != mask.shape:
        raise ValueError(f"tokens {tokens.shape} and mask {mask.shape} must be equal 2-D shapes")
    rows = max(1, min(len(tokens), max(1, 2**20 // max(1, tokens.shape[1]))))
    with atomic_store(path, "tokens", attrs) as group:
        group.create_array("tokens", data=tokens.astype(np.int32), chunks=(rows, tokens.shape[1]))
        group.create_array("mask", data=mask, chunks=(rows, tokens.shape[1]))
        group.attrs.update({"n_sequences": int(tokens.shape[0]), "context_length": int(tokens.shape[1]),
                            "n_unmasked": int(mask.sum())})


@dataclass
class TokenStore:
    """Token ids and mask of an experiment, read lazily."""

    path: Path
    group: zarr.Group

    @property
    def tokens(self) -> zarr.Array:
        return self.group["tokens"]  # [n_seq, ctx] int32

    @property
    def mask(self) -> zarr.Array:
        return self.group["mask"]  # [n_seq, ctx] bool, True = data

    @property
    def attrs(self) -> dict:
        return dict(self.group.attrs)

    @property
    def n_sequences(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def context_length(self) -> int:
        return int(self.tokens.shape[1])

    @property
    def n_unmasked(self) -> int:
        return int(self.group.attrs["n_unmasked"])

    def iter_batches(self, batch_size: int) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """Yield (start_row, tokens_block, mask_block) for consecutive blocks of sequences."""
        for start, stop in _row_chunks(self.n_sequences, batch_size):
            yield start, self.tokens[start:stop], self.mask[start:stop]

    def unmasked_positions(self) -> np.ndarray:
        """Flat indices into [n_seq * ctx] of the rows that activation/code stores hold."""
        parts = [np.flatnonzero(mask_block.ravel()) + start * self.context_length
                 for start, _, mask_block in self.iter_batches(DEFAULT_CHUNK_ROWS)]
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)


def open_tokens(path: str | os.PathLike) -> TokenStore:
    """Open a finished tokens store."""
    return TokenStore(Path(path), open_store(path, "tokens"))


# ---------------------------------------------------------------- dense activations


class ActsWriter:
    """Append dense activation blocks [n, d_model] to a new store; finalised on a clean exit."""

    def __init__(self, path: str | os.PathLike, d_model: int, dtype: str = "float32", attrs: dict | None = None,
                 chunk_rows: int = DEFAULT_CHUNK_ROWS):
        self.path, self.d_model, self.dtype = Path(path), int(d_model), np.dtype(dtype)
        self.attrs, self.chunk_rows = dict(attrs or {}), int(chunk_rows)
        self.n_tokens = 0

    def __enter__(self) -> "ActsWriter":
        self._ctx = atomic_store(self.path, "activations", {})
        group = self._ctx.__enter__()
        self._array = group.create_array("acts", shape=(0, self.d_model), dtype=self.dtype,
                                         chunks=(self.chunk_rows, self.d_model))
        self._group = group
        return self

    def append(self, block: np.ndarray) -> None:
        block = np.asarray(block, dtype=self.dtype)
        if block.ndim != 2 or block.shape[1] != self.d_model:
            raise ValueError(f"activation block {block.shape} does not have width d_model={self.d_model}")
        if len(block):
            self._array.append(block, axis=0)
            self.n_tokens += len(block)

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            self._group.attrs.update(_jsonable({**self.attrs, "n_tokens": self.n_tokens, "d_model": self.d_model,
                                                "dtype": self.dtype.name}))
        return bool(self._ctx.__exit__(exc_type, exc, tb))


@dataclass
class ActsStore:
    """Dense activations [n_tokens, d_model] at one hook, read in row chunks."""

    path: Path
    group: zarr.Group

    @property
    def array(self) -> zarr.Array:
        return self.group["acts"]

    @property
    def n_tokens(self) -> int:
        return int(self.array.shape[0])

    @property
    def d_model(self) -> int:
        return int(self.array.shape[1])

    @property
    def attrs(self) -> dict:
        return dict(self.group.attrs)

    def iter_chunks(self, rows: int | None = None) -> Iterator[np.ndarray]:
        rows = rows or int(self.array.chunks[0])
        for start, stop in _row_chunks(self.n_tokens, rows):
            yield self.array[start:stop]


def open_acts(path: str | os.PathLike) -> ActsStore:
    """Open a finished activations store."""
    return ActsStore(Path(path), open_store(path, "activations"))


# ---------------------------------------------------------------- sparse codes (CSR)


class CodesWriter:
    """Append SAE code blocks [n, d_sae] (sparse or dense) as CSR arrays; finalised on a clean exit."""

    def __init__(self, path: str | os.PathLike, d_sae: int, attrs: dict | None = None, value_dtype: str = "float32",
                 chunk_rows: int = DEFAULT_CHUNK_ROWS, chunk_nnz: int = 2**20):
        self.path, self.d_sae, self.value_dtype = Path(path), int(d_sae), np.dtype(value_dtype)
        self.attrs, self.chunk_rows, self.chunk_nnz = dict(attrs or {}), int(chunk_rows), int(chunk_nnz)
        self.n_tokens = 0
        self.nnz = 0

    def __enter__(self) -> "CodesWriter":
        self._ctx = atomic_store(self.path, "codes", {})
        group = self._ctx.__enter__()
        self._indptr = group.create_array("indptr", data=np.zeros(1, np.int64), chunks=(self.chunk_rows + 1,))
        self._indices = group.create_array("indices", shape=(0,), dtype=np.int32, chunks=(self.chunk_nnz,))
        self._values = group.create_array("values", shape=(0,), dtype=self.value_dtype, chunks=(self.chunk_nnz,))
        self._group = group
        return self

    def append(self, block: Any) -> None:
        csr = sp.csr_matrix(block)
        if csr.shape[1] != self.d_sae:
            raise ValueError(f"code block {csr.shape} does not have width d_sae={self.d_sae}")
        csr.sum_duplicates()
        csr.sort_indices()
        if csr.shape[0] == 0:
            return
        self._indptr.append(csr.indptr[1:].astype(np.int64) + self.nnz)
        if csr.nnz:
            self._indices.append(csr.indices.astype(np.int32))
            self._values.append(csr.data.astype(self.value_dtype))
        self.n_tokens += csr.shape[0]
        self.nnz += int(csr.nnz)

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            density = self.nnz / max(1, self.n_tokens * self.d_sae)
            self._group.attrs.update(_jsonable({**self.attrs, "n_tokens": self.n_tokens, "d_sae": self.d_sae,
                                                "nnz": self.nnz, "density": density,
                                                "value_dtype": self.value_dtype.name}))
        return bool(self._ctx.__exit__(exc_type, exc, tb))


@dataclass
class CodesStore:
    """Sparse SAE codes [n_tokens, d_sae] stored as CSR, read in row chunks."""

    path: Path
    group: zarr.Group

    @property
    def n_tokens(self) -> int:
        return int(self.group.attrs["n_tokens"])

    @property
    def d_sae(self) -> int:
        return int(self.group.attrs["d_sae"])

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n_tokens, self.d_sae)

    @property
    def nnz(self) -> int:
        return int(self.group.attrs["nnz"])

    @property
    def density(self) -> float:
        return self.nnz / max(1, self.n_tokens * self.d_sae)

    @property
    def attrs(self) -> dict:
        return dict(self.group.attrs)

    def read_rows(self, start: int, stop: int) -> sp.csr_matrix:
        """Rows [start, stop) as a CSR matrix (float16 values are upcast: scipy.sparse has no float16)."""
        indptr = self.group["indptr"][start:stop + 1]
        lo, hi = int(indptr[0]), int(indptr[-1])
        indices = self.group["indices"][lo:hi]
        values = self.group["values"][lo:hi]
        if values.dtype == np.float16:
            values = values.astype(np.float32)
        return sp.csr_matrix((values, indices, indptr - lo), shape=(stop - start, self.d_sae))

    def iter_chunks(self, rows: int | None = None) -> Iterator[sp.csr_matrix]:
        rows = rows or DEFAULT_CHUNK_ROWS
        for start, stop in _row_chunks(self.n_tokens, rows):
            yield self.read_rows(start, stop)

    def to_csr(self) -> sp.csr_matrix:
        """All rows as one CSR matrix (for sizes that fit in memory)."""
        return self.read_rows(0, self.n_tokens)


def open_codes(path: str | os.PathLike) -> CodesStore:
    """Open a finished codes store."""
    return CodesStore(Path(path), open_store(path, "codes"))


def write_codes(path: str | os.PathLike, codes: Any, attrs: dict | None = None, value_dtype: str = "float32") -> None:
    """Write a whole code matrix [n_tokens, d_sae] (sparse or dense) in row chunks."""
    csr = sp.csr_matrix(codes)
    with CodesWriter(path, csr.shape[1], attrs, value_dtype) as writer:
        for start, stop in _row_chunks(csr.shape[0], DEFAULT_CHUNK_ROWS):
            writer.append(csr[start:stop])
        if csr.shape[0] == 0:
            writer.append(csr)
