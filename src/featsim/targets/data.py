"""Targets of the data rules: token stores (the experiment's, and one per further tokenizer) and the alignment
store of two token stores, each with its provenance in the store attrs."""

from __future__ import annotations

import logging
import os
from typing import Any, Mapping

from featsim.alignment import build_alignment, check_aligned_share, write_alignment
from featsim.errors import ConfigError
from featsim.provenance import make_provenance
from featsim.stores import open_tokens, write_tokens
from featsim.tokens import (DataConfig, build_token_set, check_shared_tokenizer, experiment_tokenizer_source,
                            lm_tokenizer_source, load_tokenizer)

log = logging.getLogger(__name__)


def make_tokens(out_path: str | os.PathLike, data: dict, models: dict, legacy: dict | None,
                exp_dir: str | os.PathLike, ids: Mapping[str, Any] | None = None, spans: bool = False) -> dict:
    """The `tokens` rule: check that the models reading this store share the tokenizer, build the token set,
    write tokens.zarr (with character spans when `spans`: an aligned comparison reads it) with the provenance
    of the data, models and legacy config, and `ids`.

    Returns the store's attrs plus `n_sequences` and `n_unmasked`.
    """
    data_cfg = DataConfig.from_config(data, legacy)
    source, key = experiment_tokenizer_source(data_cfg, models, exp_dir)
    try:
        tokenizer = load_tokenizer(source)
    except OSError as exc:
        raise ConfigError(key, f"cannot load tokenizer {source}: {exc}") from exc
    check_shared_tokenizer(tokenizer, source, models, exp_dir)
    token_set = build_token_set(data_cfg, tokenizer, source, exp_dir, spans=spans)
    provenance = make_provenance({"data": data, "models": models, "legacy": legacy}, **dict(ids or {}))
    attrs = {**provenance, **token_set.attrs}
    write_tokens(out_path, token_set.tokens, token_set.mask, attrs, spans=token_set.spans)
    summary = {**attrs, "n_sequences": int(token_set.tokens.shape[0]), "n_unmasked": int(token_set.mask.sum())}
    log.info("wrote %s: %d rows x %d, %d unmasked positions, tokenizer %s (vocab %s)", out_path,
             *token_set.tokens.shape, summary["n_unmasked"], source, attrs["vocab_hash"])
    return summary


def make_further_tokens(out_path: str | os.PathLike, data: dict, lm: dict, owner: str, legacy: dict | None,
                        exp_dir: str | os.PathLike, experiment_tokens: str | os.PathLike,
                        ids: Mapping[str, Any] | None = None) -> dict:
    """The `tokens_further` rule: the documents of the experiment store, tokenized with the tokenizer of the LM
    of model entry `owner` (its own store, with character spans, and the provenance of the data, LM and legacy
    config, and `ids`), in as many rows as they fill.

    The experiment store (made with spans) says how many documents it read; this store holds every token of
    those documents, so each character offset the experiment store ends a token at can be looked up here.
    """
    reference = open_tokens(experiment_tokens)
    n_documents = int(reference.read_spans()["doc"].max()) + 1
    data_cfg = DataConfig.from_config(data, legacy)
    key = f"models.{owner}.lm"
    source = lm_tokenizer_source(lm, key, exp_dir)
    try:
        tokenizer = load_tokenizer(source)
    except OSError as exc:
        raise ConfigError(key, f"cannot load tokenizer {source}: {exc}") from exc
    token_set = build_token_set(data_cfg, tokenizer, source, exp_dir, spans=True, n_documents=n_documents)
    provenance = make_provenance({"data": data, "lm": lm, "legacy": legacy}, **dict(ids or {}))
    attrs = {**provenance, **token_set.attrs, "store_of": owner, "documents_of": str(experiment_tokens)}
    write_tokens(out_path, token_set.tokens, token_set.mask, attrs, spans=token_set.spans)
    summary = {**attrs, "n_sequences": int(token_set.tokens.shape[0]), "n_unmasked": int(token_set.mask.sum())}
    log.info("wrote %s: %d rows x %d, %d unmasked positions from %d documents, tokenizer %s (vocab %s)", out_path,
             *token_set.tokens.shape, summary["n_unmasked"], n_documents, source, attrs["vocab_hash"])
    return summary


def make_alignment(tokens_a_path: str | os.PathLike, tokens_b_path: str | os.PathLike, out_path: str | os.PathLike,
                   mode: str, min_share: float, ids: Mapping[str, Any] | None = None) -> dict:
    """The `alignment` rule: align two token stores, check the share floor, write the store (provenance of the
    mode and floor, and `ids`, in its attrs); returns its attrs."""
    tokens_a, tokens_b = open_tokens(tokens_a_path), open_tokens(tokens_b_path)
    pairs, counts = build_alignment(tokens_a, tokens_b, mode)
    tokenizer_a, tokenizer_b = tokens_a.attrs.get("tokenizer", tokens_a_path), tokens_b.attrs.get("tokenizer",
                                                                                                  tokens_b_path)
    check_aligned_share(counts, min_share, str(tokenizer_a), str(tokenizer_b))
    provenance = make_provenance({"mode": mode, "min_share": min_share}, **dict(ids or {}))
    attrs = {**provenance, **counts, "tokens_a": str(tokens_a_path), "tokens_b": str(tokens_b_path),
             "tokenizer_a": tokenizer_a, "tokenizer_b": tokenizer_b, "min_share": min_share,
             "vocab_hash_a": tokens_a.attrs.get("vocab_hash"), "vocab_hash_b": tokens_b.attrs.get("vocab_hash")}
    write_alignment(out_path, pairs, attrs)
    log.info("aligned %s and %s (%s mode): %d pairs, aligned share %.3f (a %.3f, b %.3f; word ends a %s, b %s)",
             tokenizer_a, tokenizer_b, mode, len(pairs), counts["aligned_share"] or 0.0, counts["share_a"] or 0.0,
             counts["share_b"] or 0.0, counts["word_end_share_a"], counts["word_end_share_b"])
    return attrs
