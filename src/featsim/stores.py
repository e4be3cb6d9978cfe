"""Zarr v3 stores for tokens, dense activations and sparse SAE codes.

Every store is a group whose attrs hold `kind`, provenance and `complete: true`, written last; it is
built at a temporary path and renamed into place, so a store that exists is a finished one. Readers
refuse incomplete or foreign stores and iterate in row chunks, never loading a whole store to iterate.

Row convention: activation and code stores hold only the unmasked token positions, in row-major order
of `tokens.zarr`; row i is flat position `TokenStore.unmasked_positions()[i]`.

Integrity (store_format 2): every chunk is written, even an all-zero one, and carries a crc32c checksum
of its compressed bytes. Opening a store checks that every chunk of the grid is present and that the
arrays have the shapes and dtypes its attrs record (metadata and a directory listing only); readers
check checksums, CSR invariants, ranges and finiteness on the chunks they read anyway, so a damaged
store stops the first job that reads it with a `DamagedStoreError` naming the store, the fault and the
command that rebuilds it. Stores of store_format 1 (older featsim: no checksums, all-zero chunks not
written) are still read with every check but the chunk-presence and checksum ones.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import scipy.sparse as sp
import zarr
from zarr.codecs import Crc32cCodec, ZstdCodec

from featsim.provenance import atomic_path, jsonable, temp_target

log = logging.getLogger(__name__)

STORE_KINDS = ("tokens", "activations", "codes", "correlation", "alignment")
DEFAULT_CHUNK_ROWS = 8192
STORE_FORMAT = 2  # 2: every chunk written and crc32c-checksummed; stores without the attr are format 1


class StoreError(RuntimeError):
    """A store cannot be used as it is; the message names it, what is wrong and how to rebuild it."""


class IncompleteStoreError(StoreError):
    """The store was not finished (interrupted write)."""


class DamagedStoreError(StoreError):
    """The store is finished but its content is damaged: missing or corrupt chunks, broken invariants."""


class StoreKindError(ValueError):
    """The path is not a featsim store of the expected kind."""


def rebuild_advice(path: str | os.PathLike) -> str:
    """How to rebuild a store: force its job, then the normal run redoes what depends on it.

    Deleting it and rerunning does not work: Snakemake does not rebuild a missing intermediate whose
    downstream outputs exist.
    """
    owner = temp_target(path)
    target = owner[0] if owner else Path(path)
    return (f"rebuild it with `snakemake -f {target}` (with your usual --configfile/--profile options), "
            "then run the workflow as usual to redo what depends on it")


def damaged(path: str | os.PathLike, kind: str, problem: str) -> DamagedStoreError:
    """The error for a damaged store: which store, what is wrong, how to rebuild it."""
    return DamagedStoreError(f"{path}: damaged {kind} store: {problem}; {rebuild_advice(path)}")


@contextlib.contextmanager
def quiet_snakemake_timestamp() -> Iterator[None]:
    """Silence zarr's warning about the .snakemake_timestamp file Snakemake drops into directory outputs."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*snakemake_timestamp.*")
        yield


def create_checked_array(group: zarr.Group, name: str, **kwargs: Any) -> zarr.Array:
    """An array of a featsim store: zstd then a crc32c checksum of each compressed chunk, and every
    chunk written even when all zero, so a missing chunk file is always damage (zarr would read fill)."""
    return group.create_array(name, compressors=(ZstdCodec(level=0), Crc32cCodec()),
                              config={"write_empty_chunks": True}, **kwargs)


@contextlib.contextmanager
def atomic_store(path: str | os.PathLike, kind: str, attrs: dict | None = None) -> Iterator[zarr.Group]:
    """Create a store at a temporary path; on success write attrs, `complete` last, and rename.

    Arrays must be made with `create_checked_array` (the store declares `store_format` 2)."""
    if kind not in STORE_KINDS:
        raise ValueError(f"unknown store kind {kind!r}; expected one of {STORE_KINDS}")
    with atomic_path(path) as tmp:
        group = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        group.attrs.update({"kind": kind, "complete": False, "store_format": STORE_FORMAT})
        yield group
        group.attrs.update(jsonable(dict(attrs or {})))
        group.attrs["complete"] = True


def missing_chunks(path: str | os.PathLike, name: str, array: zarr.Array) -> list[str]:
    """Chunk keys of the array's grid with no chunk file under `path/name` (a local store)."""
    root = Path(path) / name
    present: set[str] = set()
    for directory, _, files in os.walk(root):
        relative = Path(directory).relative_to(root)
        present.update((relative / f).as_posix() for f in files)
    grid = itertools.product(*(range(n) for n in array.cdata_shape))
    return [key for key in map(array.metadata.encode_chunk_key, grid) if key not in present]


_WARNED_OLD_FORMAT: set[str] = set()


def _check_chunks_present(path: Path, group: zarr.Group, kind: str) -> None:
    if int(group.attrs.get("store_format", 1)) < 2:
        if str(path) not in _WARNED_OLD_FORMAT:
            _WARNED_OLD_FORMAT.add(str(path))
            log.warning("%s was written by an older featsim (no chunk checksums, store_format 1): it is read with "
                        "the invariant and finiteness checks only; to get checksums, %s", path, rebuild_advice(path))
        return
    with quiet_snakemake_timestamp():
        arrays = list(group.arrays())
    for name, array in arrays:
        missing = missing_chunks(path, name, array)
        if missing:
            raise damaged(path, kind, f"array '{name}' lacks {len(missing)} of its {array.nchunks} chunks "
                                      f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}): "
                                      "deleted or never written")


def open_store(path: str | os.PathLike, kind: str | None = None) -> zarr.Group:
    """Open a finished featsim store read-only, checking its kind, completeness and that no chunk is missing."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no store at {path}")
    try:
        with quiet_snakemake_timestamp():
            group = zarr.open_group(str(path), mode="r")
    except Exception as exc:  # zarr raises several types for a non-group path
        raise StoreKindError(f"{path} is not a Zarr group ({exc}); if it was a featsim store, "
                             f"{rebuild_advice(path)}") from exc
    found = group.attrs.get("kind")
    if found is None:
        raise StoreKindError(f"{path} is not a featsim store (no 'kind' attribute)")
    if not group.attrs.get("complete", False):
        raise IncompleteStoreError(f"{path} is an incomplete {found} store (its writer was interrupted); "
                                   f"{rebuild_advice(path)}")
    if kind is not None and found != kind:
        raise StoreKindError(f"{path} is a {found} store, expected a {kind} store")
    _check_chunks_present(path, group, found)
    return group


def check_arrays(path: Path, group: zarr.Group, kind: str, expected: dict[str, tuple[tuple[int, ...], Any]]) -> None:
    """Each named array exists with the shape and dtype the store's attrs imply ({name: (shape, dtype)})."""
    with quiet_snakemake_timestamp():
        for name, (shape, dtype) in expected.items():
            try:
                array = group[name]
            except KeyError:
                raise damaged(path, kind, f"array '{name}' is missing") from None
            if tuple(array.shape) != tuple(shape) or (dtype is not None and array.dtype != np.dtype(dtype)):
                wanted = np.dtype(dtype) if dtype is not None else "any dtype"
                raise damaged(path, kind, f"array '{name}' is {array.dtype} {tuple(array.shape)}, but its attrs "
                                          f"record {wanted} {tuple(shape)}")


def recorded(path: Path, group: zarr.Group, kind: str, key: str) -> Any:
    """A required attribute of a finished store."""
    try:
        return group.attrs[key]
    except KeyError:
        raise damaged(path, kind, f"its attrs lack '{key}'") from None


def read_checked(path: Path, group: zarr.Group, kind: str, name: str, selection: Any) -> np.ndarray:
    """`group[name][selection]`, with a decoding failure (bad checksum, truncated or corrupt chunk) named."""
    try:
        return group[name][selection]
    except MemoryError:
        raise
    except Exception as exc:  # zarr and its codecs raise ValueError, RuntimeError, ... for a corrupt chunk
        raise damaged(path, kind, f"a chunk of array '{name}' cannot be read or decoded "
                                  f"({type(exc).__name__}: {exc})") from exc


def describe_non_finite(values: np.ndarray, where: str, attrs: dict, what: str) -> str:
    """How many NaN/inf `values` hold, where, from which model, layer, hook and dtype (the store's attrs),
    and the likely cause."""
    n_bad = int(values.size - np.count_nonzero(np.isfinite(values)))
    n_nan = int(np.count_nonzero(np.isnan(values)))
    origin = ", ".join(f"{label} {attrs[key]}" for key, label in
                       (("model", "model"), ("layer", "layer"), ("hook", "hook"), ("lm_dtype", "LM dtype"))
                       if attrs.get(key) is not None)
    return (f"{n_bad} non-finite {what} ({n_nan} NaN, {n_bad - n_nan} inf) {where} "
            f"({origin or 'no model recorded'}; stored as {values.dtype}). Likely cause: an overflow in half "
            f"precision (a float16/bfloat16 LM or SAE); run it in float32 "
            f"(models.{attrs.get('model') or '<model>'}.dtype: float32)")


class NonFiniteDataError(ValueError):
    """A writer was given NaN or inf: the job stops rather than store them."""


def _row_chunks(n_rows: int, rows: int) -> Iterator[tuple[int, int]]:
    for start in range(0, n_rows, rows):
        yield start, min(start + rows, n_rows)


# ---------------------------------------------------------------- tokens


SPAN_ARRAYS = {"doc": np.int32, "char_start": np.int32, "char_end": np.int32, "word_end": np.bool_}
"""Optional per-position arrays of a token store (featsim.tokens.TokenSpans): the document (-1 for BOS,
separators and padding), the character span [char_start, char_end) in it, and whether the span ends a word."""


def write_tokens(path: str | os.PathLike, tokens: np.ndarray, mask: np.ndarray, attrs: dict | None = None,
                 spans: dict[str, np.ndarray] | None = None) -> None:
    """Write token ids [n_seq, ctx] and the keep-mask [n_seq, ctx] (True = counted as data); with `spans`
    also the SPAN_ARRAYS (each [n_seq, ctx]) that character alignment reads."""
    tokens = np.asarray(tokens)
    mask = np.asarray(mask, dtype=bool)
    if tokens.ndim != 2 or tokens.shape != mask.shape:
        raise ValueError(f"tokens {tokens.shape} and mask {mask.shape} must be equal 2-D shapes")
    if spans is not None and (set(spans) != set(SPAN_ARRAYS)
                              or any(np.shape(array) != tokens.shape for array in spans.values())):
        raise ValueError(f"spans must be the arrays {sorted(SPAN_ARRAYS)}, each of shape {tokens.shape}")
    rows = max(1, min(len(tokens), max(1, 2**20 // max(1, tokens.shape[1]))))
    with atomic_store(path, "tokens", attrs) as group:
        create_checked_array(group, "tokens", data=tokens.astype(np.int32), chunks=(rows, tokens.shape[1]))
        create_checked_array(group, "mask", data=mask, chunks=(rows, tokens.shape[1]))
        for name, dtype in SPAN_ARRAYS.items() if spans is not None else ():
            create_checked_array(group, name, data=np.asarray(spans[name]).astype(dtype), chunks=(rows, tokens.shape[1]))
        if spans is not None:
            group.attrs["spans"] = True
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
        """Yield (start_row, tokens_block, mask_block) for consecutive blocks of sequences (ids checked >= 0)."""
        for start, stop in _row_chunks(self.n_sequences, batch_size):
            tokens = read_checked(self.path, self.group, "tokens", "tokens", slice(start, stop))
            if tokens.size and int(tokens.min()) < 0:
                raise damaged(self.path, "tokens", f"negative token ids in sequences {start}..{stop - 1}")
            yield start, tokens, read_checked(self.path, self.group, "tokens", "mask", slice(start, stop))

    @property
    def has_spans(self) -> bool:
        """Whether the store holds character spans (SPAN_ARRAYS), as stores made for alignment do."""
        return bool(self.group.attrs.get("spans", False))

    def read_spans(self) -> dict[str, np.ndarray]:
        """The SPAN_ARRAYS, flattened to [n_seq * ctx] (row-major, like `unmasked_positions`)."""
        if not self.has_spans:
            raise StoreKindError(f"{self.path} holds no character spans (it was made without alignment); rebuild "
                                 "it from a config whose comparisons declare `align`")
        return {name: read_checked(self.path, self.group, "tokens", name, slice(None)).reshape(-1)
                for name in SPAN_ARRAYS}

    def unmasked_positions(self) -> np.ndarray:
        """Flat indices into [n_seq * ctx] of the rows that activation/code stores hold."""
        parts = [np.flatnonzero(mask_block.ravel()) + start * self.context_length
                 for start, _, mask_block in self.iter_batches(DEFAULT_CHUNK_ROWS)]
        positions = np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)
        if positions.size != self.n_unmasked:
            raise damaged(self.path, "tokens", f"its mask keeps {positions.size} positions, its attrs record "
                                               f"n_unmasked={self.n_unmasked}")
        return positions


def open_tokens(path: str | os.PathLike) -> TokenStore:
    """Open a finished tokens store (arrays checked against the recorded shape)."""
    path = Path(path)
    group = open_store(path, "tokens")
    shape = tuple(int(recorded(path, group, "tokens", key)) for key in ("n_sequences", "context_length"))
    expected = {"tokens": (shape, np.int32), "mask": (shape, np.bool_)}
    if group.attrs.get("spans", False):
        expected.update({name: (shape, dtype) for name, dtype in SPAN_ARRAYS.items()})
    check_arrays(path, group, "tokens", expected)
    return TokenStore(path, group)


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
        self._array = create_checked_array(group, "acts", shape=(0, self.d_model), dtype=self.dtype,
                                           chunks=(self.chunk_rows, self.d_model))
        self._group = group
        return self

    def append(self, block: np.ndarray) -> None:
        """Append rows; NaN or inf stops the job (nothing is stored) with where and why."""
        with np.errstate(over="ignore"):  # an overflow in the cast gives inf, reported below
            block = np.asarray(block, dtype=self.dtype)
        if block.ndim != 2 or block.shape[1] != self.d_model:
            raise ValueError(f"activation block {block.shape} does not have width d_model={self.d_model}")
        if not np.isfinite(block).all():
            raise NonFiniteDataError(f"{self.path}: " + describe_non_finite(
                block, f"in rows {self.n_tokens}..{self.n_tokens + len(block) - 1}", self.attrs, "activations"))
        if len(block):
            self._array.append(block, axis=0)
            self.n_tokens += len(block)

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            self._group.attrs.update(jsonable({**self.attrs, "n_tokens": self.n_tokens, "d_model": self.d_model,
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
        """Consecutive row blocks [rows, d_model], each checked to be finite."""
        rows = rows or int(self.array.chunks[0])
        for start, stop in _row_chunks(self.n_tokens, rows):
            block = read_checked(self.path, self.group, "activations", "acts", slice(start, stop))
            if not np.isfinite(block).all():
                raise damaged(self.path, "activations", describe_non_finite(
                    block, f"in rows {start}..{stop - 1}", self.attrs, "activations"))
            yield block


def open_acts(path: str | os.PathLike) -> ActsStore:
    """Open a finished activations store (array checked against the recorded shape and dtype)."""
    path = Path(path)
    group = open_store(path, "activations")
    shape = tuple(int(recorded(path, group, "activations", key)) for key in ("n_tokens", "d_model"))
    check_arrays(path, group, "activations", {"acts": (shape, recorded(path, group, "activations", "dtype"))})
    return ActsStore(path, group)


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
        self._indptr = create_checked_array(group, "indptr", data=np.zeros(1, np.int64), chunks=(self.chunk_rows + 1,))
        self._indices = create_checked_array(group, "indices", shape=(0,), dtype=np.int32, chunks=(self.chunk_nnz,))
        self._values = create_checked_array(group, "values", shape=(0,), dtype=self.value_dtype,
                                            chunks=(self.chunk_nnz,))
        self._group = group
        return self

    def append(self, block: Any) -> None:
        """Append rows; NaN or inf (also after the cast to value_dtype) stops the job with where and why."""
        csr = sp.csr_matrix(block)
        if csr.shape[1] != self.d_sae:
            raise ValueError(f"code block {csr.shape} does not have width d_sae={self.d_sae}")
        csr.sum_duplicates()
        csr.sort_indices()
        if csr.shape[0] == 0:
            return
        with np.errstate(over="ignore"):  # an overflow in the cast gives inf, reported below
            stored = csr.data.astype(self.value_dtype)
        if not np.isfinite(stored).all():
            raise NonFiniteDataError(f"{self.path}: " + describe_non_finite(
                stored, f"in rows {self.n_tokens}..{self.n_tokens + csr.shape[0] - 1}", self.attrs, "SAE codes"))
        self._indptr.append(csr.indptr[1:].astype(np.int64) + self.nnz)
        if csr.nnz:
            self._indices.append(csr.indices.astype(np.int32))
            self._values.append(stored)
        self.n_tokens += csr.shape[0]
        self.nnz += int(csr.nnz)

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            density = self.nnz / max(1, self.n_tokens * self.d_sae)
            self._group.attrs.update(jsonable({**self.attrs, "n_tokens": self.n_tokens, "d_sae": self.d_sae,
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
        """Rows [start, stop) as a CSR matrix (float16 values are upcast: scipy.sparse has no float16).

        Checks what it reads: indptr non-decreasing, starting at 0 and ending at nnz, latent ids in
        [0, d_sae), values finite."""
        if not 0 <= start <= stop <= self.n_tokens:
            raise IndexError(f"rows [{start}, {stop}) outside the {self.n_tokens} rows of {self.path}")
        indptr = read_checked(self.path, self.group, "codes", "indptr", slice(start, stop + 1))
        lo, hi = int(indptr[0]), int(indptr[-1])
        if np.any(indptr[1:] < indptr[:-1]) or lo < 0 or hi > self.nnz:
            raise damaged(self.path, "codes", f"indptr is not non-decreasing within [0, nnz={self.nnz}] in rows "
                                              f"{start}..{stop}")
        if (start == 0 and lo != 0) or (stop == self.n_tokens and hi != self.nnz):
            raise damaged(self.path, "codes", f"indptr runs from {lo if start == 0 else '...'} to "
                                              f"{hi if stop == self.n_tokens else '...'}, not from 0 to nnz={self.nnz}")
        indices = read_checked(self.path, self.group, "codes", "indices", slice(lo, hi))
        if indices.size and (int(indices.min()) < 0 or int(indices.max()) >= self.d_sae):
            raise damaged(self.path, "codes", f"latent ids outside [0, d_sae={self.d_sae}) in rows {start}..{stop - 1}")
        values = read_checked(self.path, self.group, "codes", "values", slice(lo, hi))
        if not np.isfinite(values).all():
            raise damaged(self.path, "codes", describe_non_finite(values, f"in rows {start}..{stop - 1}", self.attrs,
                                                                  "SAE codes"))
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
    """Open a finished codes store (CSR arrays checked against the recorded n_tokens, nnz and dtypes)."""
    path = Path(path)
    group = open_store(path, "codes")
    n_tokens, nnz = (int(recorded(path, group, "codes", key)) for key in ("n_tokens", "nnz"))
    recorded(path, group, "codes", "d_sae")
    check_arrays(path, group, "codes", {"indptr": ((n_tokens + 1,), np.int64), "indices": ((nnz,), np.int32),
                                        "values": ((nnz,), group.attrs.get("value_dtype"))})
    return CodesStore(path, group)


def write_codes(path: str | os.PathLike, codes: Any, attrs: dict | None = None, value_dtype: str = "float32") -> None:
    """Write a whole code matrix [n_tokens, d_sae] (sparse or dense) in row chunks."""
    csr = sp.csr_matrix(codes)
    with CodesWriter(path, csr.shape[1], attrs, value_dtype) as writer:
        for start, stop in _row_chunks(csr.shape[0], DEFAULT_CHUNK_ROWS):
            writer.append(csr[start:stop])
        if csr.shape[0] == 0:
            writer.append(csr)
