"""Builders of a local stand-in of the Hugging Face hub, in the exact formats and cache layouts users download.

- a byte-level BPE tokenizer trained here with `tokenizers` (GPT-NeoX conventions: BOS = EOS = UNK =
  `<|endoftext|>`, no PAD), shared by two tiny random GPT-NeoX (Pythia-architecture) checkpoints;
- the HF hub cache layout (`models--org--name/blobs/<sha256>`, `snapshots/<commit>/<file>` symlinks,
  `refs/<revision>`), for models, SAE repos and datasets;
- SAEs in three download formats: sparsify (`layers.L/cfg.json` + `sae.safetensors`), a sae-lens repo
  whose `cfg.json` predates sae-lens 6 (`hook_point`, `activation_fn_str`, ... + `sae_weights.safetensors`,
  like `gemma-2b-res-jb`), and Gemma Scope (`layer_L/width_16k/<name>/params.npz`, no config at all);
- SAEs that reconstruct their hook: a projection onto the top principal components of the hook's own
  activations, written as ReLU/TopK/JumpReLU SAEs (+v and -v latents per component, so the code is sparse
  and non-negative and the decoder rebuilds mean + projection).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

ENDOFTEXT = "<|endoftext|>"
WORDS = {
    "animal": ["cat", "dog", "horse", "rabbit", "fox", "bird", "mouse", "sheep"],
    "color": ["red", "blue", "green", "yellow", "purple", "orange", "black", "white"],
    "place": ["garden", "forest", "river", "market", "school", "kitchen", "harbor", "village"],
    "verb": ["saw", "found", "chased", "painted", "carried", "liked", "watched", "followed"],
    "thing": ["ball", "box", "kite", "lamp", "boat", "hat", "cup", "book"],
}


def commit_hash(*parts: str) -> str:
    """A fake but well-formed 40-hex commit id."""
    return hashlib.sha1("/".join(parts).encode()).hexdigest()


def corpus_documents(n_documents: int, seed: int = 0) -> list[str]:
    """Short English-like documents from a small grammar (deterministic)."""
    rng = np.random.default_rng(seed)

    def pick(kind: str) -> str:
        return WORDS[kind][int(rng.integers(len(WORDS[kind])))]

    documents = []
    for _ in range(n_documents):
        sentences = []
        for _ in range(int(rng.integers(3, 7))):
            sentences.append(f"The {pick('color')} {pick('animal')} {pick('verb')} the {pick('thing')} "
                             f"in the {pick('place')}.")
        documents.append(" ".join(sentences))
    return documents


def train_bpe_tokenizer(documents: list[str], vocab_size: int = 320):
    """A byte-level BPE tokenizer trained on `documents`, with Pythia's special-token conventions."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[ENDOFTEXT],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    backend.train_from_iterator(documents, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=ENDOFTEXT, eos_token=ENDOFTEXT,
                                   unk_token=ENDOFTEXT)


def build_neox(out_dir: Path, tokenizer, hidden: int, layers: int, heads: int, seed: int,
               intermediate: int | None = None, max_positions: int = 128) -> Path:
    """A random GPTNeoXForCausalLM (Pythia architecture) saved with its tokenizer as a HF checkpoint
    (MLP width `intermediate`, default 4 x hidden as in Pythia)."""
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    config = GPTNeoXConfig(vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers,
                           num_attention_heads=heads, intermediate_size=intermediate or 4 * hidden,
                           max_position_embeddings=max_positions,
                           rotary_pct=0.25, use_parallel_residual=True, tie_word_embeddings=False,
                           bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(seed)
    model = GPTNeoXForCausalLM(config).eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def install_repo(hub_cache: Path, repo_id: str, source: Path, repo_type: str = "model",
                 revision: str = "main") -> Path:
    """Copy a directory into the HF hub cache layout as huggingface_hub writes it; returns the snapshot.

    Files go to `blobs/<sha256>`, the snapshot holds relative symlinks to them, and `refs/<revision>`
    names the commit (a branch such as `main` or `refs/convert/parquet`).
    """
    repo_dir = hub_cache / f"{repo_type}s--{repo_id.replace('/', '--')}"
    commit = commit_hash(repo_type, repo_id, revision)
    snapshot = repo_dir / "snapshots" / commit
    for path in sorted(p for p in Path(source).rglob("*") if p.is_file()):
        relative = path.relative_to(source)
        data = path.read_bytes()
        blob = repo_dir / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        if not blob.exists():
            blob.write_bytes(data)
        link = snapshot / relative
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.exists() or link.is_symlink():
            link.unlink()
        os.symlink(os.path.relpath(blob, link.parent), link)
    ref = repo_dir / "refs" / revision
    ref.parent.mkdir(parents=True, exist_ok=True)
    ref.write_text(commit)
    return snapshot


def residual_rows(checkpoint: Path, tokenizer, documents: list[str], context_length: int) -> dict[int, np.ndarray]:
    """Residual stream after each block but the last (= TL `blocks.L.hook_resid_post`), EOS-separated rows.

    Uses plain transformers: `hidden_states[L + 1]` is block L's output for L < n_layers - 1 (the last one
    has the final layer norm applied). Returns layer -> [n_tokens, d_model] float64, separators dropped.
    """
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(checkpoint)).eval()
    stream: list[int] = []
    for ids in tokenizer(documents, add_special_tokens=False)["input_ids"]:
        stream += ids + [tokenizer.eos_token_id]
    n_rows = len(stream) // context_length
    tokens = torch.tensor(stream[: n_rows * context_length]).reshape(n_rows, context_length)
    with torch.no_grad():
        hidden = model(tokens, output_hidden_states=True).hidden_states
    keep = (tokens != tokenizer.eos_token_id).reshape(-1).numpy()
    return {layer: hidden[layer + 1].reshape(-1, hidden[layer + 1].shape[-1]).double().numpy()[keep]
            for layer in range(model.config.num_hidden_layers - 1)}


def pca_sae(rows: np.ndarray, rank: int) -> dict[str, np.ndarray]:
    """An SAE reconstructing `rows` as mean + projection on the top `rank` principal components.

    Latents come in pairs (+v, -v) per component, so ReLU(W_enc^T (x - b_dec)) is non-negative, at most
    `rank` latents fire per token (TopK with k = rank loses nothing) and W_dec maps them back exactly.
    Shapes as sae-lens: W_enc [d_in, 2 rank], W_dec [2 rank, d_in].
    """
    mean = rows.mean(0)
    _, _, components = np.linalg.svd(rows - mean, full_matrices=False)
    basis = components[:rank]  # [rank, d_in], orthonormal rows
    W_dec = np.concatenate([basis, -basis]).astype(np.float32)
    return {"W_enc": W_dec.T.copy(), "b_enc": np.zeros(2 * rank, np.float32), "W_dec": W_dec,
            "b_dec": mean.astype(np.float32)}


def fvu(rows: np.ndarray, sae: dict[str, np.ndarray]) -> float:
    """Fraction of variance of `rows` the ReLU reading of `sae` leaves unexplained (numpy oracle)."""
    code = np.maximum((rows - sae["b_dec"]) @ sae["W_enc"] + sae["b_enc"], 0.0)
    error = rows - (code @ sae["W_dec"] + sae["b_dec"])
    return float((error ** 2).sum() / ((rows - rows.mean(0)) ** 2).sum())


# ---------------------------------------------------------------- SAE download formats


def write_sparsify(folder: Path, sae: dict[str, np.ndarray], k: int) -> None:
    """A sparsify SparseCoder checkpoint as sparsify's `save_to_disk` writes it (encoder as nn.Linear)."""
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file({"encoder.weight": sae["W_enc"].T.copy(), "encoder.bias": sae["b_enc"], "W_dec": sae["W_dec"],
               "b_dec": sae["b_dec"]}, str(folder / "sae.safetensors"))
    d_in, num_latents = sae["W_enc"].shape
    (folder / "cfg.json").write_text(json.dumps({
        "activation": "topk", "expansion_factor": max(1, num_latents // d_in), "normalize_decoder": True,
        "num_latents": num_latents, "k": k, "multi_topk": False, "skip_connection": False, "transcode": False,
        "d_in": d_in}))


def write_sae_lens_pre6(folder: Path, sae: dict[str, np.ndarray], hook: str, layer: int, model_name: str) -> None:
    """A sae-lens repo folder as sae-lens < 6 saved it (the layout of `gemma-2b-res-jb` and its peers):
    a training-runner cfg.json with `hook_point`/`hook_point_layer`/`activation_fn_str`, no
    `sae_lens_version`, and `sae_weights.safetensors`."""
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file({name: sae[name] for name in ("W_enc", "b_enc", "W_dec", "b_dec")},
              str(folder / "sae_weights.safetensors"))
    d_in, d_sae = sae["W_enc"].shape
    (folder / "cfg.json").write_text(json.dumps({
        "model_name": model_name, "model_class_name": "HookedTransformer", "hook_point": hook,
        "hook_point_eval": "blocks.{layer}.attn.pattern", "hook_point_layer": layer, "hook_point_head_index": None,
        "dataset_path": "rehearsal/openwebtext", "is_dataset_tokenized": False, "context_size": 64,
        "use_cached_activations": False, "cached_activations_path": None, "d_in": d_in, "d_sae": d_sae,
        "b_dec_init_method": "geometric_median", "expansion_factor": d_sae // d_in, "activation_fn_str": "relu",
        "apply_b_dec_to_input": True, "normalize_activations": False, "noise_scale": 0.0, "lp_norm": 1,
        "l1_coefficient": 8e-05, "lr": 4e-05, "lr_scheduler_name": "constant", "train_batch_size_tokens": 4096,
        "training_tokens": 1000000, "n_batches_in_buffer": 8, "store_batch_size_prompts": 16,
        "prepend_bos": True, "device": "cuda", "seed": 42, "dtype": "float32",
        "use_ghost_grads": False, "feature_sampling_window": 1000, "dead_feature_window": 1000,
        "dead_feature_threshold": 1e-08, "log_to_wandb": True, "wandb_project": "rehearsal", "run_name": "rehearsal",
        "checkpoint_path": "checkpoints/rehearsal", "verbose": False, "model_kwargs": {},
        "model_from_pretrained_kwargs": {}, "sae_lens_training_version": "1.3.0", "tokens_per_buffer": 67108864}))


def write_gemma_scope(folder: Path, sae: dict[str, np.ndarray]) -> None:
    """A Gemma Scope folder: one `params.npz` (W_enc [d_in, d_sae], W_dec, b_enc, b_dec, threshold), no config.

    Gemma Scope's JumpReLU reads x without subtracting b_dec (sae-lens: apply_b_dec_to_input False), so
    the centring moves into b_enc = -b_dec W_enc; the threshold (0) keeps every positive latent.
    """
    folder.mkdir(parents=True, exist_ok=True)
    b_enc = (sae["b_enc"] - sae["b_dec"] @ sae["W_enc"]).astype(np.float32)
    np.savez(folder / "params.npz", W_enc=sae["W_enc"], W_dec=sae["W_dec"], b_enc=b_enc, b_dec=sae["b_dec"],
             threshold=np.zeros_like(b_enc))


def registry_release(release: str, repo_id: str, model: str, saes_map: dict[str, str],
                     conversion_func: str | None = None, config_overrides: dict | None = None) -> dict:
    """One release in the format of sae-lens's pretrained_saes.yaml."""
    entry = {"repo_id": repo_id, "model": model, "conversion_func": conversion_func,
             "saes": [{"id": sae_id, "path": path} for sae_id, path in saes_map.items()]}
    if config_overrides:
        entry["config_overrides"] = config_overrides
    return entry
