"""Which token store each model reads: one store per distinct tokenizer, decided from the config alone.

The experiment's store (`results/{exp}/tokens.zarr`, made with `data.tokenizer` or the first model's
tokenizer) serves every model, as before, unless a model's tokenizer differs by name from the
experiment tokenizer and the model is a side of a comparison that declares `align` (token or word):
then all models with that tokenizer share a store of their own, `results/{exp}/tokens/{store}.zarr`,
named after the first (sorted) model entry that owns such an LM, and that comparison correlates codes on
character-aligned rows (featsim.alignment). Names decide at plan time (tokenizers may not exist yet: a
toy LM trains its own); that tokenizers with different names really share a vocabulary is checked when
the experiment store is made (featsim.tokens.check_shared_tokenizer). Imports nothing heavy: the
Snakefile and preflight call it at every start.
"""

from __future__ import annotations

from featsim import layout

EXPERIMENT_STORE = "tokens"
"""Store name of the experiment's own token store (results/{exp}/tokens.zarr)."""

ALIGN_MODES = ("token", "word")


def lm_owner(config: dict, model: str) -> str:
    """The model entry whose LM (and so tokenizer) `model` uses."""
    return config["models"][model].get("lm_from") or model


def tokenizer_key(config: dict, model: str) -> str:
    """A name for the tokenizer of a model entry's LM: equal names mean the same tokenizer.

    hf: the model name; local: the checkpoint path; toy: `toy-word` (the corpus tokenizer every word-level
    toy LM shares) or `toy-bpe:<owner>` (a BPE tokenizer trained with that LM, `lm.toy.tokenizer: bpe`).
    """
    owner = lm_owner(config, model)
    lm = config["models"][owner]["lm"]
    if lm["source"] == "toy":
        return f"toy-bpe:{owner}" if (lm.get("toy") or {}).get("tokenizer", "word") == "bpe" else "toy-word"
    return str(lm.get("name") if lm["source"] == "hf" else lm.get("path"))


def experiment_tokenizer_key(config: dict) -> str:
    """The tokenizer name of the experiment store: `data.tokenizer`, the toy word tokenizer, else the first model's."""
    data = config["data"]
    if data.get("tokenizer"):
        return str(data["tokenizer"])
    if data.get("source") == "toy":
        return "toy-word"
    return tokenizer_key(config, next(iter(config["models"])))


def align_mode(config: dict, comparison: str) -> str | None:
    """The alignment a comparison declares (`comparisons.<c>.align`), or None."""
    return config["comparisons"][comparison].get("align")


def token_store_names(config: dict) -> dict[str, str]:
    """Model entry -> the name of the token store it reads (EXPERIMENT_STORE or an LM owner's name)."""
    reference = experiment_tokenizer_key(config)
    aligned_models = {config["comparisons"][cmp][side] for cmp in config["comparisons"] if align_mode(config, cmp)
                      for side in ("a", "b")}
    own_keys = {tokenizer_key(config, model) for model in aligned_models} - {reference}
    store_of_key: dict[str, str] = {}
    for model in sorted(config["models"]):
        key = tokenizer_key(config, model)
        if key in own_keys:
            store_of_key.setdefault(key, lm_owner(config, model))
    return {model: store_of_key.get(tokenizer_key(config, model), EXPERIMENT_STORE) for model in config["models"]}


def further_stores(config: dict) -> dict[str, list[str]]:
    """Store name -> the model entries reading it, for every store besides the experiment's."""
    stores: dict[str, list[str]] = {}
    for model, store in sorted(token_store_names(config).items()):
        if store != EXPERIMENT_STORE:
            stores.setdefault(store, []).append(model)
    return stores


def store_path(exp: str, store: str) -> str:
    """The path of a token store."""
    if store == EXPERIMENT_STORE:
        return layout.fill(layout.TOKENS, exp=exp)
    return layout.fill(layout.TOKENIZER_TOKENS, exp=exp, store=store)


def model_store_path(config: dict, exp: str, model: str) -> str:
    """The token store a model entry reads (its activations, codes rows and labels)."""
    return store_path(exp, token_store_names(config)[model])


def comparison_alignment(config: dict, comparison: str) -> tuple[str, str, str] | None:
    """(store of side a, store of side b, mode) of a comparison whose sides read different stores, else None."""
    names = token_store_names(config)
    entry = config["comparisons"][comparison]
    store_a, store_b = names[entry["a"]], names[entry["b"]]
    if store_a == store_b:
        return None
    return store_a, store_b, align_mode(config, comparison) or "token"


def alignment_path(exp: str, store_a: str, store_b: str, mode: str) -> str:
    """The aligned row pairs of two token stores."""
    return layout.fill(layout.ALIGNMENT, exp=exp, store_a=store_a, store_b=store_b, mode=mode)


def comparison_row_inputs(config: dict, exp: str, comparison: str) -> dict[str, str]:
    """Inputs a comparison-level job needs to know its rows: `tokens` (side a's store, whose held-out split
    applies) and, for a comparison across token stores, `tokens_b` and `alignment`."""
    entry = config["comparisons"][comparison]
    inputs = {"tokens": model_store_path(config, exp, entry["a"])}
    aligned = comparison_alignment(config, comparison)
    if aligned is not None:
        inputs["tokens_b"] = store_path(exp, aligned[1])
        inputs["alignment"] = alignment_path(exp, *aligned)
    return inputs


def unaligned_cross_store_comparisons(config: dict) -> list[tuple[str, str, str]]:
    """(comparison, tokenizer of a, tokenizer of b) for comparisons whose sides read different token stores
    without declaring `align` (a model can only be in one store)."""
    names = token_store_names(config)
    found = []
    for cmp, entry in config["comparisons"].items():
        if names[entry["a"]] != names[entry["b"]] and not align_mode(config, cmp):
            found.append((cmp, tokenizer_key(config, entry["a"]), tokenizer_key(config, entry["b"])))
    return found
