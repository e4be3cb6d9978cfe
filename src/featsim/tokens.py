"""Token shards: documents -> token rows [n_seq, context_length] + a keep-mask (featsim.targets.data writes
them to tokens.zarr).

Conventions (decided here, recorded in the store's attrs):
- Row start: with `data.prepend_bos: auto` every row starts with BOS when the tokenizer has a BOS token
  distinct from its EOS (Gemma, Llama, the toy tokenizer mark sequence starts that way); tokenizers whose
  BOS is the EOS (GPT-NeoX/Pythia, GPT-2) or that have none (Qwen) get no BOS, as those models were trained.
- Documents: `concat` packing joins documents' tokens with a separator (BOS when rows start with BOS,
  so every document starts as a sequence would; else EOS, the `<|endoftext|>` convention) and cuts
  the stream into rows; `truncate` packing puts one document per row (its first tokens), right-padded,
  as the original study did. Padding is only ever on the right, so causal models need no attention mask.
- Mask (True = data): padding is never data; BOS/EOS and `data.mask.special_tokens` positions are dropped
  by default; `legacy.keep_special_tokens` keeps every position, padding included, as the study did.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import sys
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
from tqdm.auto import tqdm

from featsim.errors import ConfigError

log = logging.getLogger(__name__)

TOY_HELDOUT = Path("toy") / "corpus" / "heldout.txt"
TOY_TOKENIZER = Path("toy") / "corpus" / "tokenizer"
LOCAL_BUILDERS = {"text": "text", "jsonl": "json", "parquet": "parquet"}
TOKENIZE_BATCH = 256  # documents per tokenizer call


# ---------------------------------------------------------------- config


@dataclass(frozen=True)
class MaskConfig:
    """Which positions are dropped besides padding (config `data.mask`)."""

    drop_bos: bool = True
    drop_eos: bool = True
    special_tokens: tuple[str, ...] = ()


@dataclass(frozen=True)
class DataConfig:
    """The token set of an experiment (config `data`, plus `legacy.keep_special_tokens`)."""

    source: str = "toy"  # toy | hf | local
    n_tokens: int = 65536  # positions before masking, rounded down to whole rows
    context_length: int = 64
    seed: int = 0
    tokenizer: str | None = None
    hf: dict = field(default_factory=dict)
    local: dict = field(default_factory=dict)
    mask: MaskConfig = MaskConfig()
    prepend_bos: str | bool = "auto"  # auto | true | false
    packing: str = "concat"  # concat | truncate
    keep_special_tokens: bool = False

    def __post_init__(self) -> None:
        if self.source not in DOCUMENT_SOURCES:
            raise ConfigError("data.source", f"{self.source!r} is not one of {sorted(DOCUMENT_SOURCES)}")
        if self.context_length < 2:
            raise ConfigError("data.context_length", f"must be >= 2, got {self.context_length}")
        if self.n_tokens < self.context_length:
            raise ConfigError("data.n_tokens", f"{self.n_tokens} is less than one row of context_length="
                                               f"{self.context_length}")
        if self.prepend_bos not in ("auto", True, False):
            raise ConfigError("data.prepend_bos", f"must be auto, true or false, got {self.prepend_bos!r}")
        if self.packing not in PACKERS:
            raise ConfigError("data.packing", f"{self.packing!r} is not one of {sorted(PACKERS)}")

    @property
    def n_rows(self) -> int:
        return self.n_tokens // self.context_length

    @classmethod
    def from_config(cls, data: dict, legacy: dict | None = None) -> "DataConfig":
        """Build from the `data` config slice and the `legacy` slice."""
        mask = dict(data.get("mask") or {})
        return cls(
            source=data.get("source", "toy"), n_tokens=int(data.get("n_tokens", 65536)),
            context_length=int(data.get("context_length", 64)), seed=int(data.get("seed", 0)),
            tokenizer=data.get("tokenizer"), hf=dict(data.get("hf") or {}), local=dict(data.get("local") or {}),
            mask=MaskConfig(bool(mask.get("drop_bos", True)), bool(mask.get("drop_eos", True)),
                            tuple(mask.get("special_tokens") or ())),
            prepend_bos=data.get("prepend_bos", "auto"), packing=data.get("packing", "concat"),
            keep_special_tokens=bool((legacy or {}).get("keep_special_tokens", False)),
        )


# ---------------------------------------------------------------- tokenizers


def load_tokenizer(source: str | os.PathLike):
    """A Hugging Face tokenizer from a directory or a hub name (offline: from the HF cache)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(source))


def vocab_hash(tokenizer) -> str:
    """sha256 (16 hex) of the tokenizer's token -> id map: equal hashes mean the same vocabulary."""
    items = sorted(tokenizer.get_vocab().items())
    return hashlib.sha256(json.dumps(items, ensure_ascii=False).encode()).hexdigest()[:16]


def lm_tokenizer_source(lm: dict, key: str, exp_dir: str | os.PathLike) -> str:
    """Where the tokenizer of an LM config entry (`models.<m>.lm`) lives: hub name or directory."""
    source = lm.get("source")
    if source == "hf":
        from featsim.lm import official_model_name

        return official_model_name(lm.get("name"), f"{key}.name")
    if source == "local":
        if not lm.get("path"):
            raise ConfigError(f"{key}.path", "required when the LM source is local")
        return str(lm["path"])
    if source == "toy":
        if (lm.get("toy") or {}).get("tokenizer", "word") == "bpe":  # trained with the LM, kept in its directory
            owner = key.split(".")[1]
            return str(Path(exp_dir) / "toy" / "lm" / owner / "tokenizer")
        return str(Path(exp_dir) / TOY_TOKENIZER)
    raise ConfigError(f"{key}.source", f"{source!r} is not one of hf, local, toy")


def model_lm(models: dict, name: str) -> dict:
    """The LM config of a model entry (its own, or that of its `lm_from` entry)."""
    entry = models[name]
    return entry["lm"] if "lm" in entry else models[entry["lm_from"]]["lm"]


def experiment_tokenizer_source(data: DataConfig, models: dict, exp_dir: str | os.PathLike) -> tuple[str, str]:
    """(tokenizer source, config key it comes from): `data.tokenizer`, else the first model's LM."""
    if data.tokenizer:
        return str(data.tokenizer), "data.tokenizer"
    if data.source == "toy":
        return str(Path(exp_dir) / TOY_TOKENIZER), "data.source"
    first = next(iter(models))
    owner = models[first].get("lm_from") or first
    return lm_tokenizer_source(model_lm(models, first), f"models.{owner}.lm", exp_dir), f"models.{owner}.lm"


def vocab_compatible(reference: dict[str, int], other: dict[str, int]) -> bool:
    """THE tokenizer-identity rule: every token of `reference` (the experiment tokenizer, which made the token
    ids) has the same id in `other` (a model's tokenizer). Tokens only `other` has (added specials) never
    occur in the token store, so they do not matter; any token that moved or is missing does.
    """
    return all(other.get(token) == index for token, index in reference.items())


def check_shared_tokenizer(tokenizer, source: str, models: dict, exp_dir: str | os.PathLike,
                           loader: Callable[[str], Any] = load_tokenizer) -> None:
    """Stop unless every model's LM tokenizer is `vocab_compatible` with the experiment tokenizer.

    `models` are the entries that read the experiment's token store. Preflight already names the comparison
    that lacks `align` when it can read both tokenizers; this check at run time names the model, so that the
    job depends on no comparison config."""
    reference = tokenizer.get_vocab()
    checked: dict[str, bool] = {source: True}
    for name in models:
        owner = models[name].get("lm_from") or name
        model_source = lm_tokenizer_source(model_lm(models, name), f"models.{owner}.lm", exp_dir)
        if model_source not in checked:
            try:
                checked[model_source] = vocab_compatible(reference, loader(model_source).get_vocab())
            except OSError as exc:
                raise ConfigError(f"models.{owner}.lm", f"cannot load the tokenizer {model_source} of model '{name}': "
                                                        f"{exc}") from exc
        if not checked[model_source]:
            raise ConfigError(f"models.{owner}.lm",
                              f"model '{name}' uses tokenizer {model_source}, which gives tokens of the experiment "
                              f"tokenizer {source} other ids (or lacks them): declare `align: word` (or token) on "
                              f"every comparison that includes '{name}' (comparisons.<comparison>.align) to correlate on "
                              "character-aligned positions, or compare models that share a tokenizer")


def special_ids(tokenizer) -> dict[str, int | None]:
    """BOS/EOS/PAD/UNK ids of a tokenizer (None when it has no such token)."""
    return {name: getattr(tokenizer, f"{name}_token_id", None) for name in ("bos", "eos", "pad", "unk")}


def resolve_prepend_bos(setting: str | bool, tokenizer) -> bool:
    """Whether rows start with BOS (see module docstring for the `auto` rule)."""
    ids = special_ids(tokenizer)
    if setting == "auto":
        return ids["bos"] is not None and ids["bos"] != ids["eos"]
    if setting and ids["bos"] is None:
        raise ConfigError("data.prepend_bos", "the tokenizer has no BOS token to prepend")
    return bool(setting)


def masked_token_ids(mask: MaskConfig, tokenizer) -> list[int]:
    """Token ids whose positions are dropped: BOS/EOS (unless kept) and the listed special tokens."""
    ids = special_ids(tokenizer)
    dropped = set()
    if mask.drop_bos and ids["bos"] is not None:
        dropped.add(ids["bos"])
    if mask.drop_eos and ids["eos"] is not None:
        dropped.add(ids["eos"])
    vocab = tokenizer.get_vocab()
    for token in mask.special_tokens:
        if token not in vocab:
            raise ConfigError("data.mask.special_tokens", f"token {token!r} is not in the tokenizer's vocabulary")
        dropped.add(vocab[token])
    return sorted(dropped)


# ---------------------------------------------------------------- documents


def _shuffled(items: list, seed: int) -> list:
    order = np.random.default_rng(seed).permutation(len(items))
    return [items[i] for i in order]


def toy_documents(data: DataConfig, exp_dir: Path) -> Iterator[str]:
    """Held-out toy stories, one per non-empty line, in file order."""
    path = exp_dir / TOY_HELDOUT
    if not path.exists():
        raise FileNotFoundError(f"toy corpus file {path} is missing; build the toy corpus target first")
    with open(path) as handle:
        for line in handle:
            if line.strip():
                yield line.rstrip("\n")


def _expand_paths(patterns: Iterable[str]) -> list[str]:
    paths: list[str] = []
    for pattern in patterns:
        matches = sorted(glob.glob(os.path.expanduser(pattern)))
        if not matches:
            raise ConfigError("data.local.paths", f"{pattern!r} matches no file")
        paths.extend(matches)
    return paths


def local_documents(data: DataConfig, exp_dir: Path) -> Iterator[str]:
    """Documents of local text (one per line), jsonl or parquet files; shuffled with `data.seed` if asked."""
    import datasets

    local = data.local
    fmt = local.get("format", "text")
    if fmt not in LOCAL_BUILDERS:
        raise ConfigError("data.local.format", f"{fmt!r} is not one of {sorted(LOCAL_BUILDERS)}")
    paths = _expand_paths(local.get("paths") or [])
    if not paths:
        raise ConfigError("data.local.paths", "list at least one file")
    dataset = datasets.load_dataset(LOCAL_BUILDERS[fmt], data_files=paths, split="train")
    text_field = "text" if fmt == "text" else local.get("text_field", "text")
    if text_field not in dataset.column_names:
        raise ConfigError("data.local.text_field", f"{text_field!r} is not a field of {paths[0]} "
                                                    f"(fields: {dataset.column_names})")
    if local.get("shuffle", False):
        dataset = dataset.shuffle(seed=data.seed)
    for record in dataset:
        text = record[text_field]
        if text and text.strip():
            yield text


def hf_dataset_location(hf: dict) -> tuple[str, str | None]:
    """(path, revision) that `datasets.load_dataset` reads `data.hf` from.

    A local directory is read as is. A hub dataset is read from the hub, at `revision`; offline
    (HF_HUB_OFFLINE=1, e.g. on compute nodes after `featsim prefetch`) from its snapshot in the HF cache,
    because datasets' hub loader needs the network to resolve a repository.
    """
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    path, revision = str(hf["path"]), hf.get("revision")
    if Path(path).expanduser().is_dir():
        return str(Path(path).expanduser()), None
    if not constants.is_offline_mode():
        return path, revision
    try:
        return snapshot_download(path, repo_type="dataset", revision=revision, local_files_only=True), None
    except LocalEntryNotFoundError as exc:
        raise ConfigError("data.hf.path", f"dataset {path!r} (revision {revision or 'main'}) is not in the HF cache "
                                          "and HF_HUB_OFFLINE is set: run `featsim prefetch CONFIG` where there is "
                                          "internet, with the same HF_HOME") from exc


def hf_documents(data: DataConfig, exp_dir: Path) -> Iterator[str]:
    """Documents of a Hugging Face dataset, in stream order unless `data.hf.shuffle_buffer` > 0."""
    import datasets

    hf = data.hf
    if not hf.get("path"):
        raise ConfigError("data.hf.path", "required when data.source is hf")
    streaming = bool(hf.get("streaming", True))
    location, revision = hf_dataset_location(hf)
    dataset = datasets.load_dataset(location, hf.get("name"), split=hf.get("split", "train"), streaming=streaming,
                                    revision=revision, data_files=hf.get("data_files"))
    text_field = hf.get("text_field", "text")
    columns = dataset.column_names
    if columns is not None and text_field not in columns:
        raise ConfigError("data.hf.text_field", f"{text_field!r} is not a column of {hf['path']} (columns: {columns})")
    buffer = int(hf.get("shuffle_buffer", 0))
    if buffer > 0:
        dataset = dataset.shuffle(seed=data.seed, buffer_size=buffer) if streaming else dataset.shuffle(seed=data.seed)
    for record in dataset:
        text = record[text_field]
        if text and text.strip():
            yield text


DOCUMENT_SOURCES: dict[str, Callable[[DataConfig, Path], Iterator[str]]] = {
    "toy": toy_documents,
    "local": local_documents,
    "hf": hf_documents,
}


def tokenized_documents(documents: Iterable[str], tokenizer) -> Iterator[list[int]]:
    """Token ids of each document without special tokens (the packer adds BOS/EOS itself)."""
    batch: list[str] = []
    for text in documents:
        batch.append(text)
        if len(batch) == TOKENIZE_BATCH:
            yield from tokenizer(batch, add_special_tokens=False)["input_ids"]
            batch = []
    if batch:
        yield from tokenizer(batch, add_special_tokens=False)["input_ids"]


@dataclass
class EncodedDocument:
    """One document's token ids with their character spans [start, end) and word-end flags."""

    index: int  # position in document order
    ids: list[int]
    starts: list[int]
    ends: list[int]
    word_ends: list[bool]


def ends_word(text: str, end: int) -> bool:
    """Whether a token ending at character `end` ends a word: its last character is no space, and it does not
    stop inside a run of letters/digits."""
    return 0 < end and not text[end - 1].isspace() and (
        end >= len(text) or not (text[end - 1].isalnum() and text[end].isalnum()))


def encoded_documents(documents: Iterable[str], tokenizer) -> Iterator[EncodedDocument]:
    """Token ids of each document with the character spans the (fast) tokenizer reports, no special tokens."""
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError("comparisons.<c>.align", f"character alignment needs a fast tokenizer (offsets); "
                                                   f"{type(tokenizer).__name__} has none")
    index = 0
    batch: list[str] = []

    def encode(texts: list[str]) -> Iterator[EncodedDocument]:
        nonlocal index
        encoded = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
        for text, ids, offsets in zip(texts, encoded["input_ids"], encoded["offset_mapping"]):
            starts = [int(start) for start, _ in offsets]
            ends = [int(end) for _, end in offsets]
            yield EncodedDocument(index, list(ids), starts, ends, [ends_word(text, end) for end in ends])
            index += 1

    for text in documents:
        batch.append(text)
        if len(batch) == TOKENIZE_BATCH:
            yield from encode(batch)
            batch = []
    if batch:
        yield from encode(batch)


# ---------------------------------------------------------------- packing


@dataclass
class PackedRows:
    """Token rows and where padding is; `n_documents` = documents (partly) used."""

    tokens: np.ndarray  # [n_seq, ctx] int32
    is_padding: np.ndarray  # [n_seq, ctx] bool
    n_documents: int


def pack_concat(docs: Iterable[list[int]], n_rows: int, context_length: int, bos_id: int | None,
                separator_id: int | None, pad_id: int) -> PackedRows:
    """Join documents with `separator_id`, cut into rows of `context_length` (each led by `bos_id` if given)."""
    body = context_length - (bos_id is not None)
    needed = n_rows * body
    stream: list[int] = []
    n_documents = 0
    for ids in docs:
        if n_documents and separator_id is not None:
            stream.append(separator_id)
        stream.extend(ids)
        n_documents += 1
        if len(stream) >= needed:
            break
    used = min(len(stream), needed)
    n_full = -(-used // body)
    body_rows = np.full((n_full, body), pad_id, dtype=np.int32)
    body_rows.reshape(-1)[:used] = stream[:used]
    padding = np.zeros((n_full, body), dtype=bool)
    padding.reshape(-1)[used:] = True
    if bos_id is not None:
        body_rows = np.concatenate([np.full((n_full, 1), bos_id, np.int32), body_rows], axis=1)
        padding = np.concatenate([np.zeros((n_full, 1), bool), padding], axis=1)
    return PackedRows(body_rows, padding, n_documents)


def pack_truncate(docs: Iterable[list[int]], n_rows: int, context_length: int, bos_id: int | None,
                  separator_id: int | None, pad_id: int) -> PackedRows:
    """One document per row: its first tokens (after `bos_id` if given), right-padded with `pad_id`."""
    body = context_length - (bos_id is not None)
    tokens = np.full((n_rows, context_length), pad_id, dtype=np.int32)
    padding = np.ones((n_rows, context_length), dtype=bool)
    start = int(bos_id is not None)
    row = 0
    for ids in docs:
        if row == n_rows:
            break
        if not ids:
            continue
        if bos_id is not None:
            tokens[row, 0], padding[row, 0] = bos_id, False
        kept = ids[:body]
        tokens[row, start:start + len(kept)] = kept
        padding[row, start:start + len(kept)] = False
        row += 1
    return PackedRows(tokens[:row], padding[:row], row)


PACKERS = {"concat": pack_concat, "truncate": pack_truncate}


def build_mask(tokens: np.ndarray, is_padding: np.ndarray, dropped_ids: list[int], keep_all: bool) -> np.ndarray:
    """Keep-mask [n_seq, ctx]: not padding and not a dropped id (everything when `keep_all`)."""
    if keep_all:
        return np.ones(tokens.shape, dtype=bool)
    return ~is_padding & ~np.isin(tokens, np.asarray(dropped_ids, dtype=tokens.dtype))


# ---------------------------------------------------------------- the token store


@dataclass
class TokenSet:
    """Rows, mask and the attrs that describe how they were made; `spans` (stores.SPAN_ARRAYS) when asked."""

    tokens: np.ndarray  # [n_seq, ctx] int32
    mask: np.ndarray  # [n_seq, ctx] bool, True = data
    attrs: dict
    spans: dict[str, np.ndarray] | None = None  # each [n_seq, ctx]


def _pack_spans(encoded: list[EncodedDocument], packer, n_rows: int, data: DataConfig, prepend: bool,
                separator: int | None) -> dict[str, np.ndarray]:
    """The span arrays in the layout of the packed ids: the packers place tokens by document lengths only, so
    packing each per-token field the same way lines it up with the ids (-1 at BOS, separators, padding)."""
    bos = -1 if prepend else None
    sep = -1 if separator is not None else None
    fields = {"doc": [[doc.index] * len(doc.ids) for doc in encoded], "char_start": [doc.starts for doc in encoded],
              "char_end": [doc.ends for doc in encoded],
              "word_end": [[int(flag) for flag in doc.word_ends] for doc in encoded]}
    spans = {name: packer(iter(lists), n_rows, data.context_length, bos, sep, -1).tokens
             for name, lists in fields.items()}
    spans["word_end"] = spans["word_end"] == 1
    return spans


def _recording(documents: Iterable[EncodedDocument], into: list[EncodedDocument]) -> Iterator[list[int]]:
    """The ids of each document, appending the document to `into` as the packer takes it."""
    for doc in documents:
        into.append(doc)
        yield doc.ids


def _rows_for_all(encoded: list[EncodedDocument], data: DataConfig, prepend: bool, separator: int | None) -> int:
    """Rows that hold every token of `encoded` (with separators) under `data.packing`."""
    if data.packing == "truncate":
        return sum(1 for doc in encoded if doc.ids)
    body = data.context_length - prepend
    n_stream = sum(len(doc.ids) for doc in encoded) + (len(encoded) - 1) * (separator is not None)
    return max(1, -(-n_stream // body))


def build_token_set(data: DataConfig, tokenizer, tokenizer_source: str, exp_dir: str | os.PathLike,
                    documents: Iterable[str] | None = None, spans: bool = False,
                    n_documents: int | None = None) -> TokenSet:
    """Tokenize and pack the configured documents; `documents` overrides the configured source (tests).

    `spans`: also record each position's document and character span (for alignment). `n_documents`: pack
    exactly the first n documents, in as many rows as they fill (a further tokenizer's store of the documents
    the experiment store holds), instead of `data.n_tokens` positions.
    """
    exp_dir = Path(exp_dir)
    ids = special_ids(tokenizer)
    prepend = resolve_prepend_bos(data.prepend_bos, tokenizer)
    separator = ids["bos"] if prepend else (ids["eos"] if ids["eos"] is not None else ids["bos"])
    pad_id = next(i for i in (ids["eos"], ids["pad"], 0) if i is not None)  # the study padded with EOS
    dropped = masked_token_ids(data.mask, tokenizer)
    docs = documents if documents is not None else DOCUMENT_SOURCES[data.source](data, exp_dir)
    packer = PACKERS[data.packing]
    n_rows = data.n_rows
    encoded: list[EncodedDocument] = []
    if spans or n_documents is not None:
        if n_documents is not None:
            encoded = list(encoded_documents(islice(docs, n_documents), tokenizer))
            n_rows = _rows_for_all(encoded, data, prepend, separator)
            stream: Iterable[list[int]] = (doc.ids for doc in encoded)
        else:
            stream = _recording(encoded_documents(docs, tokenizer), encoded)
    else:
        stream = tokenized_documents(docs, tokenizer)
    progress = tqdm(stream, desc="tokenizing documents", unit="doc", file=sys.stderr, mininterval=5.0)
    packed = packer(progress, n_rows, data.context_length, ids["bos"] if prepend else None, separator, pad_id)
    progress.close()
    if len(packed.tokens) == 0:
        raise ConfigError(f"data.{data.source}", "the documents produced no tokens")
    if n_documents is None and (len(packed.tokens) < data.n_rows or packed.is_padding[-1].any()):
        log.warning("documents ran out: %d of %d requested rows (%d padded positions)", len(packed.tokens),
                    data.n_rows, int(packed.is_padding.sum()))
    mask = build_mask(packed.tokens, packed.is_padding, dropped, data.keep_special_tokens)
    attrs = {
        "tokenizer": tokenizer_source,
        "vocab_hash": vocab_hash(tokenizer),
        "vocab_size": len(tokenizer.get_vocab()),
        "bos_token_id": ids["bos"], "eos_token_id": ids["eos"], "pad_token_id": pad_id,
        "separator_token_id": separator,
        "masked_token_ids": dropped,
        "prepend_bos": prepend,
        "packing": data.packing,
        "keep_special_tokens": data.keep_special_tokens,
        "data_source": data.source,
        "n_documents": packed.n_documents,
        "n_padding": int(packed.is_padding.sum()),
        "n_tokens_requested": data.n_tokens,
        "seed": data.seed,
    }
    if not spans:
        return TokenSet(packed.tokens, mask, attrs)
    return TokenSet(packed.tokens, mask, attrs, _pack_spans(encoded, packer, n_rows, data, prepend, separator))
