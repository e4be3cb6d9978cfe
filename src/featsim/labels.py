"""Per-latent labels: firing counts, mean activations and the top-k activating positions with their text.

The codes are streamed once in row chunks; a numba kernel (featsim._topk_kernel) keeps a size-k heap
per latent (ties to the earlier row) and the per-latent sums in the same pass, so 32k latents x 1M
tokens stays within a few hundred MB and takes a few seconds. Only unmasked positions exist in a code
store, so masked positions (padding, BOS/EOS, listed specials) can never be a top position.

Text of a top position: the token as decoded alone, the whole word containing it (rebuilt from the
neighbouring tokens with `WordRules`, so the "man" in "Brockman" yields the word "Brockman"), and a
context window of `context_window` tokens each side inside the same unmasked run of the sequence.
"""

from __future__ import annotations

import contextlib
import gc
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import pandas as pd
import scipy.sparse as sp
from tqdm import tqdm

from featsim.errors import ConfigError, reject_unknown_keys
from featsim.tokens import load_tokenizer as load_by_name, vocab_hash

LABEL_COLUMNS = (
    "latent", "n_active", "mean_act", "mean_act_active", "max_act", "top_positions", "top_values",
    "top_token_ids", "top_tokens", "top_words", "top_contexts",
)
# Rows per code chunk are chosen so that a chunk holds about this many stored entries.
CHUNK_ENTRIES = 4_000_000
# A rebuilt word never extends more than this many tokens to either side of the top token.
MAX_WORD_TOKENS = 24
# Raw-token markers of a leading space (byte-level BPE "Ġ", SentencePiece "▁") or newline/tab (byte-level).
_SPACE_MARKERS = ("\u0120", "\u2581", "\u010a", "\u0109", " ", "\n", "\t")
_REPLACEMENT_CHAR = "\ufffd"  # a partial UTF-8 byte of a byte-level token; part of a word, not punctuation


@dataclass(frozen=True)
class LabelsConfig:
    """Config key `labels`: how many top positions to keep and how much context to show."""

    top_k: int = 20  # top activating positions kept per latent
    context_window: int = 8  # tokens of context on each side of a top position

    def __post_init__(self) -> None:
        if not isinstance(self.top_k, int) or self.top_k < 1:
            raise ConfigError("labels.top_k", f"must be a positive integer, got {self.top_k!r}")
        if not isinstance(self.context_window, int) or self.context_window < 0:
            raise ConfigError("labels.context_window", f"must be a non-negative integer, got {self.context_window!r}")

    @classmethod
    def from_config(cls, values: dict[str, Any] | None) -> "LabelsConfig":
        """Build from the `labels` config slice; unknown keys are an error."""
        values = dict(values or {})
        reject_unknown_keys(values, cls.__dataclass_fields__, "labels")
        return cls(**values)


# ---------------------------------------------------------------- numbers: running top-k and stats


@dataclass(frozen=True)
class LatentStats:
    """Per-latent activation statistics and top-k rows (row = index into the code store)."""

    n_tokens: int
    n_active: np.ndarray  # int64 [d_sae]: tokens with activation > 0
    mean_act: np.ndarray  # float64 [d_sae]: mean over all unmasked tokens
    mean_act_active: np.ndarray  # float64 [d_sae]: mean over firing tokens (NaN if it never fires)
    max_act: np.ndarray  # float64 [d_sae]: max over all unmasked tokens (0 where an entry is unstored)
    top_rows: np.ndarray  # int64 [d_sae, k]: code-store rows, best first, -1 padding
    top_values: np.ndarray  # float32 [d_sae, k]: their activations, -inf padding


def _chunk_rows(codes) -> int:
    """Rows per chunk so that a chunk holds about CHUNK_ENTRIES stored entries."""
    per_row = max(codes.nnz / max(codes.shape[0], 1), 1.0)
    return int(max(256, min(CHUNK_ENTRIES / per_row, 1 << 20)))


def _iter_code_chunks(codes, rows: int) -> Iterator[tuple[int, sp.csr_matrix]]:
    """(first row, CSR chunk) over a code store or an in-memory sparse/dense matrix."""
    if hasattr(codes, "iter_chunks"):
        start = 0
        for chunk in codes.iter_chunks(rows):
            yield start, chunk
            start += chunk.shape[0]
    else:
        matrix = sp.csr_matrix(codes)
        for start in range(0, matrix.shape[0], rows):
            yield start, matrix[start:start + rows]


def latent_stats(codes, top_k: int, rows_per_chunk: int | None = None, progress: bool = True,
                 rows: np.ndarray | None = None) -> LatentStats:
    """Stream `codes` ([n_tokens, d_sae] code store or matrix) once: counts, means, max, top-k rows.

    `rows`: a bool mask over the token rows to describe (e.g. the held-out rows of featsim.split);
    statistics are over those rows only, and top rows keep their code-store numbering."""
    if not hasattr(codes, "iter_chunks"):
        codes = sp.csr_matrix(codes)
    n_tokens, d_sae = codes.shape
    if rows is not None:
        rows = np.asarray(rows)
        if rows.shape != (n_tokens,) or rows.dtype != bool:
            raise ValueError(f"rows must be a bool mask over the {n_tokens} token rows, got {rows.dtype} {rows.shape}")
    from featsim import _topk_kernel

    rows_per_chunk = rows_per_chunk or _chunk_rows(codes)
    top_values = np.empty((d_sae, top_k), dtype=np.float32)
    top_rows = np.empty((d_sae, top_k), dtype=np.int64)
    held = np.zeros(d_sae, dtype=np.int64)
    n_active = np.zeros(d_sae, dtype=np.int64)
    n_stored = np.zeros(d_sae, dtype=np.int64)
    sum_all = np.zeros(d_sae, dtype=np.float64)
    sum_active = np.zeros(d_sae, dtype=np.float64)
    chunk_sum_all = np.empty(d_sae, dtype=np.float64)
    chunk_sum_active = np.empty(d_sae, dtype=np.float64)
    max_stored = np.full(d_sae, -np.inf, dtype=np.float64)
    chunks = _iter_code_chunks(codes, rows_per_chunk)
    total = -(-n_tokens // rows_per_chunk)
    for start, chunk in tqdm(chunks, total=total, desc="labels: top-k", unit="chunk", disable=not progress):
        row_ids = np.arange(start, start + chunk.shape[0], dtype=np.int64)
        if rows is not None:
            keep = rows[start:start + chunk.shape[0]]
            chunk, row_ids = chunk[keep], row_ids[keep]
        chunk_sum_all.fill(0.0)
        chunk_sum_active.fill(0.0)
        _topk_kernel.offer_chunk(chunk.indptr.astype(np.int64, copy=False),
                                 chunk.indices.astype(np.int32, copy=False),
                                 chunk.data.astype(np.float32, copy=False), row_ids, top_values, top_rows, held,
                                 n_stored, n_active, chunk_sum_all, chunk_sum_active, max_stored)
        sum_all += chunk_sum_all
        sum_active += chunk_sum_active
    _topk_kernel.sort_heaps(top_values, top_rows, held)
    n_tokens = int(rows.sum()) if rows is not None else n_tokens
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_active = np.where(n_active > 0, sum_active / n_active, np.nan)
    # Unstored entries are zeros: they count towards the max wherever a latent has one.
    max_act = np.where(n_stored < n_tokens, np.maximum(max_stored, 0.0), max_stored)
    return LatentStats(
        n_tokens=int(n_tokens),
        n_active=n_active,
        mean_act=sum_all / max(n_tokens, 1),
        mean_act_active=mean_active,
        max_act=max_act,
        top_rows=top_rows,
        top_values=top_values,
    )


# ---------------------------------------------------------------- text: words and contexts


@dataclass(frozen=True)
class WordRules:
    """Per token id: does the token start a new word, does it end the current one."""

    begins_word: np.ndarray  # bool [vocab]
    ends_word: np.ndarray  # bool [vocab]


def _is_wordless(text: str) -> bool:
    """True for punctuation, symbols and whitespace: such a token is a word of its own."""
    return not any(ch.isalnum() or ch == _REPLACEMENT_CHAR for ch in text)


def word_rules(tokenizer, vocab_size: int | None = None) -> WordRules:
    """Word-boundary rules of a Hugging Face tokenizer.

    Word-level models: every token is a word. WordPiece: a token continues the word iff it carries
    the continuing-subword prefix ("##"). BPE/Unigram: a token starts a word iff its raw form carries a
    space/newline marker (Ġ, ▁, Ċ) or its decoded text begins with whitespace; it ends the word iff
    its decoded text ends with whitespace. In every model, special tokens and tokens without letters
    or digits (punctuation, symbols, whitespace) are words of their own, and a token whose text starts
    (ends) with such a character starts (ends) a word.
    """
    size = max(len(tokenizer), vocab_size or 0)
    ids = list(range(size))
    raw = [str(token) if token is not None else "" for token in tokenizer.convert_ids_to_tokens(ids)]
    decoded = tokenizer.batch_decode([[i] for i in ids], clean_up_tokenization_spaces=False)
    model = getattr(getattr(tokenizer, "backend_tokenizer", None), "model", None)
    model_kind = type(model).__name__ if model is not None else ""
    begins = np.zeros(size, dtype=bool)
    ends = np.zeros(size, dtype=bool)
    if model_kind == "WordLevel":
        begins[:] = True
        ends[:] = True
    elif model_kind == "WordPiece":
        prefix = getattr(model, "continuing_subword_prefix", "##") or "##"
        begins[:] = [not token.startswith(prefix) for token in raw]
        decoded = [text.removeprefix(prefix) for text in decoded]  # "##ck" is a word piece, not punctuation
    else:
        begins[:] = [token.startswith(_SPACE_MARKERS) or text[:1].isspace() for token, text in zip(raw, decoded)]
        ends[:] = [text[-1:].isspace() for text in decoded]
    for i, text in enumerate(decoded):
        stripped = text.strip()
        if _is_wordless(stripped):
            begins[i] = ends[i] = True
        else:
            begins[i] |= _is_wordless(stripped[0])
            ends[i] |= _is_wordless(stripped[-1])
    special = [i for i in getattr(tokenizer, "all_special_ids", []) if 0 <= i < size]
    begins[special] = True
    ends[special] = True
    return WordRules(begins_word=begins, ends_word=ends)


def _start_at_or_before(breaks: np.ndarray) -> np.ndarray:
    """int64 [n]: for each index the last index <= it where `breaks` is True (breaks[0] must be True)."""
    return np.maximum.accumulate(np.where(breaks, np.arange(len(breaks)), 0))


def _end_at_or_after(breaks: np.ndarray) -> np.ndarray:
    """int64 [n]: for each index p the last index of its span, i.e. (first break after p) - 1."""
    n = len(breaks)
    next_break = np.where(breaks, np.arange(n), n)
    first_from = np.minimum.accumulate(next_break[::-1])[::-1]  # first break at or after p
    return np.append(first_from[1:], n) - 1


@dataclass(frozen=True)
class Spans:
    """Per requested flat position: its word span and its unmasked-run span (inclusive bounds)."""

    word_start: np.ndarray  # int64 [m]
    word_end: np.ndarray  # int64 [m]
    run_start: np.ndarray  # int64 [m]
    run_end: np.ndarray  # int64 [m]


def spans(flat_tokens: np.ndarray, flat_mask: np.ndarray, context_length: int, rules: WordRules,
          positions: np.ndarray) -> Spans:
    """Word and unmasked-run bounds of `positions` in the flattened [n_seq * ctx] token array."""
    n = len(flat_tokens)
    index = np.arange(n)
    previous_kept = np.concatenate([[False], flat_mask[:-1]])
    run_breaks = (index % context_length == 0) | ~flat_mask | ~previous_kept
    previous_ends = np.concatenate([[True], rules.ends_word[flat_tokens[:-1]]])
    word_breaks = run_breaks | rules.begins_word[flat_tokens] | previous_ends
    run_start = _start_at_or_before(run_breaks)[positions]
    run_end = _end_at_or_after(run_breaks)[positions]
    word_start = np.maximum(_start_at_or_before(word_breaks)[positions], positions - MAX_WORD_TOKENS)
    word_end = np.minimum(_end_at_or_after(word_breaks)[positions], positions + MAX_WORD_TOKENS)
    return Spans(word_start, word_end, run_start, run_end)


def _decode_many(tokenizer, id_lists: list[list[int]]) -> list[str]:
    """Decode many id lists; a fast tokenizer's Rust backend does it without per-item Python overhead."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        return backend.decode_batch(id_lists, skip_special_tokens=False)
    return tokenizer.batch_decode(id_lists, clean_up_tokenization_spaces=False)


def _mark(left: str, with_token: str, full: str) -> str:
    """`full` with the token's text (between `left` and `with_token`) wrapped in [[...]]."""
    if not (with_token.startswith(left) and full.startswith(with_token)):
        # Decoding is not prefix-stable here (e.g. a split multi-byte character): join the parts.
        return f"{left} [[{with_token[len(left):].strip()}]] {full[len(with_token):]}".strip()
    token = with_token[len(left):]
    if not token.strip():  # a whitespace token is shown as itself
        return f"{left}[[{token}]]{full[len(with_token):]}"
    lead = token[: len(token) - len(token.lstrip())]
    return f"{left}{lead}[[{token.strip()}]]{full[len(with_token):]}"


@contextlib.contextmanager
def _without_cyclic_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector: building millions of small lists and strings (which form no
    cycles) otherwise triggers collections that re-scan every live object, about a third of the text time."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def position_text(tokenizer, flat_tokens: np.ndarray, flat_mask: np.ndarray, context_length: int,
                  positions: np.ndarray, context_window: int, rules: WordRules | None = None
                  ) -> tuple[list[str], list[str], list[str]]:
    """Decoded token, whole word and marked context (e.g. `... the [[cat]] sat ...`) per flat position."""
    requested = np.asarray(positions, dtype=np.int64)
    if len(requested) == 0:
        return [], [], []
    with _without_cyclic_gc():
        return _position_text(tokenizer, flat_tokens, flat_mask, context_length, requested, context_window, rules)


def _position_text(tokenizer, flat_tokens: np.ndarray, flat_mask: np.ndarray, context_length: int,
                   requested: np.ndarray, context_window: int, rules: WordRules | None
                   ) -> tuple[list[str], list[str], list[str]]:
    """position_text's work, with the cyclic collector paused by the caller."""
    # Latents share top positions: work on each distinct position once.
    positions, back = np.unique(requested, return_inverse=True)
    rules = rules or word_rules(tokenizer, int(flat_tokens.max()) + 1)
    bounds = spans(flat_tokens, flat_mask, context_length, rules, positions)
    unique_ids, inverse = np.unique(flat_tokens[positions], return_inverse=True)
    unique_text = _decode_many(tokenizer, [[int(i)] for i in unique_ids])
    tokens = [unique_text[i] for i in inverse.tolist()]
    # Slices of a Python list cost a fraction of numpy slice + tolist: ~500k positions are cut four times.
    ids = flat_tokens.tolist()
    at = positions.tolist()
    # A one-token word decodes exactly as its token alone: only longer words are decoded again.
    longer = np.flatnonzero(bounds.word_end > bounds.word_start)
    words = [text.strip() for text in tokens]
    longer_words = _decode_many(tokenizer, [ids[s:e + 1] for s, e in zip(bounds.word_start[longer].tolist(),
                                                                           bounds.word_end[longer].tolist())])
    for i, word in zip(longer.tolist(), longer_words):
        words[i] = word.strip()
    lo = np.maximum(positions - context_window, bounds.run_start)
    hi = np.minimum(positions + context_window, bounds.run_end)
    cut_left = (lo > bounds.run_start).tolist()
    cut_right = (hi < bounds.run_end).tolist()
    lo, hi = lo.tolist(), hi.tolist()
    left = _decode_many(tokenizer, [ids[a:p] for a, p in zip(lo, at)])
    with_token = _decode_many(tokenizer, [ids[a:p + 1] for a, p in zip(lo, at)])
    full = _decode_many(tokenizer, [ids[a:b + 1] for a, b in zip(lo, hi)])
    contexts = [
        ("... " if cut_l else "") + _mark(a, b, c).replace("\n", "\\n").strip() + (" ..." if cut_r else "")
        for a, b, c, cut_l, cut_r in zip(left, with_token, full, cut_left, cut_right)
    ]
    back = back.tolist()
    return [tokens[i] for i in back], [words[i] for i in back], [contexts[i] for i in back]


# ---------------------------------------------------------------- tokenizer and the labels table


def load_tokenizer(token_attrs: dict, source: str = "tokens.zarr"):
    """The tokenizer a tokens store records (attr `tokenizer`: a directory or hub name), vocabulary checked."""
    name = token_attrs.get("tokenizer") or token_attrs.get("tokenizer_path") or token_attrs.get("tokenizer_name")
    if not name:
        raise ValueError(f"{source} records no tokenizer (attr 'tokenizer'); rebuild tokens.zarr")
    try:
        tokenizer = load_by_name(name)
    except OSError as exc:
        raise OSError(f"{source}: cannot load its tokenizer {name!r} ({exc}); "
                      "rebuild the tokenizer or tokens.zarr") from exc
    expected = token_attrs.get("vocab_hash")
    if expected and vocab_hash(tokenizer) != expected:
        raise ValueError(f"{source}: tokenizer {name!r} now has a different vocabulary than when the tokens were "
                         "made (vocab_hash differs); rebuild tokens.zarr and everything after it")
    return tokenizer


def _split(flat: list, counts: np.ndarray) -> list[list]:
    """`flat` cut into consecutive lists of the given lengths."""
    offsets = np.concatenate([[0], np.cumsum(counts)]).tolist()
    return [flat[a:b] for a, b in zip(offsets[:-1], offsets[1:])]


def labels_table(stats: LatentStats, unmasked_positions: np.ndarray, flat_tokens: np.ndarray,
                 flat_mask: np.ndarray, context_length: int, tokenizer, context_window: int) -> pd.DataFrame:
    """One row per latent with the LABEL_COLUMNS contract (lists ordered best first)."""
    held = stats.top_rows >= 0  # [d_sae, k]
    counts = held.sum(axis=1)
    rows = stats.top_rows[held]  # row-major: latent by latent, best first
    positions = np.asarray(unmasked_positions, dtype=np.int64)[rows]
    if len(positions) and not flat_mask[positions].all():
        raise ValueError("a top position is masked: the code store rows do not match tokens.zarr's mask")
    tokens, words, contexts = position_text(tokenizer, flat_tokens, flat_mask, context_length, positions,
                                            context_window)
    with _without_cyclic_gc():
        return _table(stats, counts, held, positions, flat_tokens, tokens, words, contexts)


def _table(stats: LatentStats, counts: np.ndarray, held: np.ndarray, positions: np.ndarray,
           flat_tokens: np.ndarray, tokens: list[str], words: list[str], contexts: list[str]) -> pd.DataFrame:
    """The labels table from the per-position lists, cut latent by latent."""
    return pd.DataFrame({
        "latent": np.arange(len(counts), dtype=np.int64),
        "n_active": stats.n_active,
        "mean_act": stats.mean_act,
        "mean_act_active": stats.mean_act_active,
        "max_act": stats.max_act,
        "top_positions": _split(positions.tolist(), counts),
        "top_values": _split(stats.top_values[held].astype(np.float64).tolist(), counts),
        "top_token_ids": _split(flat_tokens[positions].astype(np.int64).tolist(), counts),
        "top_tokens": _split(tokens, counts),
        "top_words": _split(words, counts),
        "top_contexts": _split(contexts, counts),
    })


def label_latents(codes, tokens, tokenizer, config: LabelsConfig, progress: bool = True,
                  rows: np.ndarray | None = None) -> pd.DataFrame:
    """Labels of every latent of a code store (`featsim.stores.CodesStore`) over its tokens store
    (over the code rows where the bool mask `rows` is True, when given)."""
    positions = tokens.unmasked_positions()
    if len(positions) != codes.n_tokens:
        raise ValueError(
            f"code store {getattr(codes, 'path', '')} has {codes.n_tokens} rows but tokens store "
            f"{getattr(tokens, 'path', '')} has {len(positions)} unmasked positions; rebuild the codes"
        )
    stats = latent_stats(codes, config.top_k, progress=progress, rows=rows)
    flat_tokens = np.asarray(tokens.tokens[...]).reshape(-1).astype(np.int64)
    flat_mask = np.asarray(tokens.mask[...]).reshape(-1).astype(bool)
    return labels_table(stats, positions, flat_tokens, flat_mask, tokens.context_length, tokenizer,
                        config.context_window)
