"""Latent and pair filters for pairing: junk (non-concept) latents, shared top tokens, correlation floor.

Junk tokens are matched on *normalised* token text (see `normalise_token`) or on token ids, so a
newline token is caught whether the list says "\\n" (a literal backslash-n, as the original study
wrote it) or a real newline, and " ." is caught by ".". The `exact` mode reproduces the original
study's plain string membership test (reference-method §4.2) for `legacy_keep_first`.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import yaml

from featsim.errors import ConfigError

# Literal escape sequences (as the study's notebooks wrote newlines) read as the character they name.
_LITERAL_ESCAPES = {"\\n": "\n", "\\r": "\r", "\\t": "\t"}
# SentencePiece writes a leading space as U+2581; decoded text normally has a real space instead.
_SENTENCEPIECE_SPACE = "\u2581"
WHITESPACE_TOKEN = ""  # the normal form of every whitespace-only token (" ", "\n", "\n\n", "\\n", "")

JUNK_MATCH_MODES = ("normalised", "exact")


def normalise_token(text: str) -> str:
    """The text a junk entry and a token are compared by.

    Rules, in order: the literal two-character escapes backslash-n/-r/-t become newline, carriage
    return and tab; the SentencePiece space mark U+2581 becomes a space; leading and trailing
    whitespace is stripped. So " ." -> ".", "\\n" -> "" and every whitespace-only token -> "" (one
    class: listing any of "", " ", "\\n", "\n" marks every whitespace-only token as junk). Case is kept.
    """
    for escape, char in _LITERAL_ESCAPES.items():
        text = text.replace(escape, char)
    return text.replace(_SENTENCEPIECE_SPACE, " ").strip()


@dataclass(frozen=True)
class JunkList:
    """Junk entries: token texts (compared per `match` mode) and token ids (compared exactly)."""

    texts: tuple[str, ...] = ()
    ids: tuple[int, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.texts or self.ids)


def load_junk_tokens(
    spec: str | os.PathLike | Sequence[str | int] | None, key: str = "junk_tokens", root: Path | None = None
) -> JunkList:
    """Read a junk list given inline (strings = token text, ints = token ids) or as a file path.

    Files: `.yaml`/`.yml` hold a YAML list (strings and/or ints); any other suffix is plain text with
    one token text per line (only the line break is removed, so " ." stays " ."; empty lines are
    skipped; write a newline as the literal "\\n"). `key` names the config key in error messages; a
    relative file path is read from `root` (default: the working directory).
    """
    if spec is None:
        return JunkList()
    if isinstance(spec, (str, os.PathLike)):
        return _read_junk_file(Path(spec), key, root)
    texts: list[str] = []
    ids: list[int] = []
    for position, entry in enumerate(spec):
        if isinstance(entry, bool) or not isinstance(entry, (str, int, np.integer)):
            raise ConfigError(
                f"{key}[{position}]",
                f"junk entries must be strings (token text) or integers (token ids), got {entry!r}",
            )
        if isinstance(entry, str):
            texts.append(entry)
        else:
            ids.append(int(entry))
    return JunkList(tuple(texts), tuple(ids))


def _read_junk_file(written: Path, key: str, root: Path | None = None) -> JunkList:
    path = written if root is None or written.is_absolute() else root / written
    if not path.is_file():
        raise ConfigError(key, f"junk token file '{written}' does not exist (a string is read as a file path); give "
                               f"an existing .txt/.yaml file, or list tokens inline as a YAML list, e.g. ['{written}']")
    if path.suffix.lower() in (".yaml", ".yml"):
        entries = yaml.safe_load(path.read_text(encoding="utf-8"))
        if entries is None:
            return JunkList()
        if not isinstance(entries, list):
            raise ConfigError(key, f"{path} must hold a YAML list of junk tokens, got {type(entries).__name__}")
        return load_junk_tokens(entries, key=f"{key} ({path})")
    lines = path.read_text(encoding="utf-8").split("\n")
    return JunkList(tuple(line.removesuffix("\r") for line in lines if line.removesuffix("\r") != ""))


@dataclass(frozen=True)
class JunkFlags:
    """Per-latent junk verdicts: `mask[i]` is True when latent i is junk; `hits[i]` the entries it matched."""

    mask: np.ndarray  # bool [d_sae]
    hits: tuple[tuple[str, ...], ...]  # per latent, matched junk entries in normal form ("id:<n>" for ids)

    def most_common(self, latents: Iterable[int] | None = None, n: int = 20) -> list[tuple[str, int]]:
        """The junk entries matched most often, counting each latent once (over `latents` if given)."""
        chosen = np.flatnonzero(self.mask) if latents is None else np.unique(np.asarray(list(latents), dtype=np.int64))
        counts: Counter[str] = Counter()
        for latent in chosen:
            counts.update(self.hits[latent])
        return counts.most_common(n)


def junk_flags(
    top_tokens: Sequence[Sequence[str]],
    junk: JunkList,
    *,
    top_token_ids: Sequence[Sequence[int]] | None = None,
    top_k: int | None = None,
    match: str = "normalised",
) -> JunkFlags:
    """Flag latents whose first `top_k` top-activating tokens include a junk entry.

    `top_tokens[i]` is latent i's decoded top tokens (descending activation); `top_token_ids[i]` the
    matching ids (needed only for id entries). `match="normalised"` compares `normalise_token` forms;
    `match="exact"` compares raw strings (the original study's rule).
    """
    if match not in JUNK_MATCH_MODES:
        raise ValueError(f"junk match mode must be one of {JUNK_MATCH_MODES}, got {match!r}")
    if junk.ids and top_token_ids is None:
        raise ValueError("junk list holds token ids but no top_token_ids were given")
    if top_k is not None and top_k < 1:
        raise ValueError(f"junk top_k must be a positive integer or None, got {top_k}")
    as_key = normalise_token if match == "normalised" else (lambda text: text)
    junk_texts = {as_key(text) for text in junk.texts}
    junk_ids = set(junk.ids)
    n_latents = len(top_tokens)
    mask = np.zeros(n_latents, dtype=bool)
    hits: list[tuple[str, ...]] = [()] * n_latents
    key_cache: dict[str, str] = {}
    for latent in range(n_latents):
        matched: list[str] = []
        for text in list(top_tokens[latent])[:top_k]:
            text_key = key_cache.get(text)
            if text_key is None:
                text_key = key_cache[text] = as_key(text)
            if text_key in junk_texts and text_key not in matched:
                matched.append(text_key)
        if junk_ids:
            for token_id in list(top_token_ids[latent])[:top_k]:
                label = f"id:{int(token_id)}"
                if int(token_id) in junk_ids and label not in matched:
                    matched.append(label)
        if matched:
            mask[latent] = True
            hits[latent] = tuple(matched)
    return JunkFlags(mask=mask, hits=tuple(hits))


def top_token_sets(top_tokens: Sequence[Sequence[int | str]], top_k: int | None = None) -> list[frozenset]:
    """Per latent, the set of its first `top_k` top tokens (ids or texts) for `shares_top_token`."""
    return [frozenset(list(tokens)[:top_k]) for tokens in top_tokens]


def shares_top_token(
    a: np.ndarray, b: np.ndarray, top_sets_a: Sequence[frozenset], top_sets_b: Sequence[frozenset]
) -> np.ndarray:
    """bool [n_pairs]: whether pair (a[i], b[i]) has at least one top token in common."""
    return np.fromiter(
        (not top_sets_a[i].isdisjoint(top_sets_b[j]) for i, j in zip(a.tolist(), b.tolist())),
        dtype=bool,
        count=len(a),
    )


def above_min_corr(corr: np.ndarray, min_corr: float | None) -> np.ndarray:
    """bool [n_pairs]: correlation strictly above `min_corr` (the study's `> 0.1`); all True when None."""
    if min_corr is None:
        return np.isfinite(corr)
    return corr > min_corr


def excluded_latents(best_partner: np.ndarray) -> np.ndarray:
    """bool [d_sae]: latents the correlation step excluded (fewer than `min_active` firings: partner -1)."""
    return np.asarray(best_partner) < 0


@dataclass(frozen=True)
class LatentLabels:
    """Per-latent top tokens aligned to latent index (empty for latents the labels file lacks)."""

    top_tokens: list[list[str]]  # [d_sae][<= top_k] decoded text
    top_token_ids: list[list[int]]  # [d_sae][<= top_k]


def labels_by_latent(labels, d_sae: int, source: str = "labels") -> LatentLabels:
    """Align a labels table (columns `latent`, `top_tokens`, `top_token_ids`) to latents 0..d_sae-1."""
    missing = {"latent", "top_tokens", "top_token_ids"} - set(labels.columns)
    if missing:
        raise ValueError(f"{source}: labels table lacks columns {sorted(missing)}; rebuild it with the labels rule")
    latents = labels["latent"].to_numpy(dtype=np.int64)
    if latents.size and (latents.min() < 0 or latents.max() >= d_sae):
        raise ValueError(
            f"{source}: latent ids range {latents.min()}..{latents.max()} but the correlation result has "
            f"d_sae={d_sae}; labels and correlation come from different SAEs: rebuild both"
        )
    top_tokens: list[list[str]] = [[] for _ in range(d_sae)]
    top_token_ids: list[list[int]] = [[] for _ in range(d_sae)]
    for latent, texts, ids in zip(latents.tolist(), labels["top_tokens"], labels["top_token_ids"]):
        top_tokens[latent] = [str(text) for text in texts] if texts is not None else []
        top_token_ids[latent] = [int(token_id) for token_id in ids] if ids is not None else []
    return LatentLabels(top_tokens=top_tokens, top_token_ids=top_token_ids)
