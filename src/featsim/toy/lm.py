"""Small transformer-lens LMs trained on the toy corpus (plain torch loop, deterministic from a seed).

Checkpoint directory: `config.json` (the HookedTransformerConfig arguments), `model.safetensors`,
`tokenizer/` (the corpus tokenizer), `metrics.json` (losses, timing) and `provenance.json`.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping

import numpy as np
import torch
from tqdm.auto import tqdm

from featsim.errors import ConfigError
from featsim.provenance import (DIRECTORY_PROVENANCE, atomic_path, make_provenance, read_directory_provenance,
                                write_json)
from featsim.toy.corpus import HELDOUT_FILE, HELDOUT_PERMUTED_FILE, TOKENIZER_DIR, TRAIN_FILE, TRAIN_PERMUTED_FILE
from featsim.toy.reproducible import reproducible_torch
from featsim.toy.sequences import read_stories, story_rows
from featsim.toy.settings import config_from_dict
from featsim.toy.tokenizer import build_bpe_tokenizer, load_word_tokenizer

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
METRICS_FILE = "metrics.json"
CORPUS_FILES = {"original": (TRAIN_FILE, HELDOUT_FILE), "permuted": (TRAIN_PERMUTED_FILE, HELDOUT_PERMUTED_FILE)}


@dataclass(frozen=True)
class ToyLMConfig:
    """Architecture and training settings of one toy LM (config key `models.<m>.lm.toy`)."""

    CONFIG_KEY: ClassVar[str] = "models.<model>.lm.toy"
    corpus: str = "original"  # original | permuted (the concept-permuted control corpus)
    d_model: int = 64
    n_layers: int = 2
    d_head: int = 16
    seed: int = 0  # initialisation and data order
    n_ctx: int = 64  # sequence length of training rows (<bos> + 63 tokens)
    epochs: float = 1.0  # passes over the training rows (fractions allowed)
    batch_size: int = 32
    lr: float = 3e-3  # AdamW peak; 5% linear warm-up, then cosine to 0
    weight_decay: float = 0.01
    warmup_fraction: float = 0.05
    grad_clip: float = 1.0
    eval_rows: int = 512  # held-out rows used for the reported loss
    tokenizer: str = "word"  # word: the corpus tokenizer | bpe: a subword BPE trained on the training stories
    bpe_vocab_size: int = 96  # vocabulary of the bpe tokenizer, special tokens included

    def __post_init__(self) -> None:
        key = self.CONFIG_KEY
        if self.corpus not in CORPUS_FILES:
            raise ConfigError(f"{key}.corpus", f"must be one of {sorted(CORPUS_FILES)}, got {self.corpus!r}")
        if self.tokenizer not in ("word", "bpe"):
            raise ConfigError(f"{key}.tokenizer", f"must be word or bpe, got {self.tokenizer!r}")
        if self.bpe_vocab_size < 16:
            raise ConfigError(f"{key}.bpe_vocab_size", f"must be >= 16, got {self.bpe_vocab_size}")
        if self.d_model % self.d_head:
            raise ConfigError(f"{key}.d_model", f"{self.d_model} is not a multiple of d_head={self.d_head}")
        if self.epochs <= 0 or self.batch_size < 1 or self.lr <= 0:
            raise ConfigError(key, "epochs, batch_size and lr must be positive")

    @classmethod
    def from_config(cls, values: dict[str, Any], key: str = CONFIG_KEY) -> "ToyLMConfig":
        """Build from the `models.<m>.lm.toy` config slice (`key` names it in errors); unknown keys are an error."""
        return config_from_dict(cls, values, key)

    def transformer_config(self, d_vocab: int) -> dict[str, Any]:
        """Arguments of `HookedTransformerConfig` for this LM (stored as the checkpoint's config.json)."""
        return {
            "d_model": self.d_model, "n_layers": self.n_layers, "d_head": self.d_head,
            "n_heads": self.d_model // self.d_head, "d_mlp": 4 * self.d_model, "n_ctx": self.n_ctx,
            "d_vocab": d_vocab, "act_fn": "gelu", "normalization_type": "LN", "seed": self.seed,
            "default_prepend_bos": True,
            "model_name": f"featsim-toy-{self.corpus}-d{self.d_model}-l{self.n_layers}-s{self.seed}"
                          + (f"-bpe{self.bpe_vocab_size}" if self.tokenizer == "bpe" else ""),
        }


def _quiet_hooked_transformer(hooked_cfg, tokenizer):
    """A HookedTransformer, without transformer-lens 3.9's deprecation warning (we build it from a config)."""
    from transformer_lens import HookedTransformer

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="HookedTransformer is deprecated", category=DeprecationWarning)
        return HookedTransformer(hooked_cfg, tokenizer=tokenizer)


def build_model(transformer_config: dict[str, Any], tokenizer_dir: str | Path, device: str = "cpu",
                dtype: str = "float32"):
    """A HookedTransformer with the given config arguments and the tokenizer from `tokenizer_dir`."""
    from transformer_lens import HookedTransformerConfig

    hooked_cfg = HookedTransformerConfig(**transformer_config, device=device, dtype=getattr(torch, dtype))
    return _quiet_hooked_transformer(hooked_cfg, load_word_tokenizer(tokenizer_dir))


def _lr_lambda(total_steps: int, warmup_fraction: float):
    warmup = max(1, int(round(warmup_fraction * total_steps)))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


@torch.no_grad()
def heldout_loss(model, rows: np.ndarray, batch_size: int = 64) -> float:
    """Mean next-token cross-entropy over all predicted positions of `rows` [n, ctx]."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(rows), batch_size):
        block = torch.as_tensor(rows[start:start + batch_size], device=model.cfg.device)
        n_predicted = block.shape[0] * (block.shape[1] - 1)
        total += model(block, return_type="loss").item() * n_predicted
        count += n_predicted
    model.train(was_training)
    return total / count


def train_toy_lm(cfg: ToyLMConfig, corpus_dir: str | Path, out_dir: str | Path, threads: int = 1,
                 ids: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Train one toy LM on its corpus and write the checkpoint directory atomically; return its metrics.

    Deterministic: the same config and thread count give the same weights (seeded init and data
    order, deterministic torch algorithms). Its provenance: `cfg`, `ids` and the corpus's config hash.
    """
    record = make_provenance(asdict(cfg), kind="toy_lm", **dict(ids or {}),
                             corpus_config_hash=read_directory_provenance(corpus_dir)["config_hash"])
    with reproducible_torch(threads), tempfile.TemporaryDirectory() as scratch:
        tokenizer_dir = lm_tokenizer_dir(cfg, Path(corpus_dir), Path(scratch))
        return _train_toy_lm(cfg, Path(corpus_dir), tokenizer_dir, out_dir, threads, record)


def lm_tokenizer_dir(cfg: ToyLMConfig, corpus_dir: Path, scratch: Path) -> Path:
    """The tokenizer directory of the LM: the corpus tokenizer, or (bpe) one trained on its training stories
    and saved under `scratch` (the checkpoint keeps a copy)."""
    if cfg.tokenizer == "word":
        return corpus_dir / TOKENIZER_DIR

    build_bpe_tokenizer(read_stories(corpus_dir / CORPUS_FILES[cfg.corpus][0]), cfg.bpe_vocab_size).save_pretrained(
        str(scratch / TOKENIZER_DIR))
    return scratch / TOKENIZER_DIR


def _train_toy_lm(cfg: ToyLMConfig, corpus_dir: Path, tokenizer_dir: Path, out_dir: str | Path, threads: int,
                  record: dict) -> dict[str, Any]:
    started, cpu_started = time.perf_counter(), time.process_time()
    tokenizer = load_word_tokenizer(tokenizer_dir)
    train_file, heldout_file = CORPUS_FILES[cfg.corpus]
    train_rows = story_rows(tokenizer, corpus_dir / train_file, cfg.n_ctx)  # [n_rows, n_ctx]
    eval_rows = story_rows(tokenizer, corpus_dir / heldout_file, cfg.n_ctx, max_rows=cfg.eval_rows)
    eval_rows_original = (eval_rows if heldout_file == HELDOUT_FILE
                          else story_rows(tokenizer, corpus_dir / HELDOUT_FILE, cfg.n_ctx, max_rows=cfg.eval_rows))

    transformer_config = cfg.transformer_config(d_vocab=len(tokenizer))
    model = build_model(transformer_config, tokenizer_dir)  # seeds torch with cfg.seed
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.98), weight_decay=cfg.weight_decay)
    total_steps = max(1, math.ceil(cfg.epochs * len(train_rows) / cfg.batch_size))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(total_steps, cfg.warmup_fraction))
    order_rng = torch.Generator().manual_seed(cfg.seed)
    n_epochs = math.ceil(total_steps * cfg.batch_size / len(train_rows))
    order = torch.cat([torch.randperm(len(train_rows), generator=order_rng) for _ in range(n_epochs)])
    train_tokens = torch.as_tensor(train_rows)

    initial_loss = heldout_loss(model, eval_rows)
    losses: list[float] = []
    for step in tqdm(range(total_steps), desc=f"toy LM d{cfg.d_model} seed {cfg.seed}", file=sys.stderr,
                     mininterval=5.0):
        batch = train_tokens[order[step * cfg.batch_size:(step + 1) * cfg.batch_size]]  # [batch, n_ctx]
        loss = model(batch, return_type="loss")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
    final_loss = heldout_loss(model, eval_rows)
    metrics = {
        "corpus": cfg.corpus,
        "tokenizer": cfg.tokenizer,
        "vocab_size": len(tokenizer),
        "steps": total_steps,
        "train_rows": len(train_rows),
        "train_tokens_seen": total_steps * cfg.batch_size * cfg.n_ctx,
        "n_params": sum(p.numel() for p in model.parameters()),
        "initial_heldout_loss": initial_loss,
        "final_train_loss": float(np.mean(losses[-20:])),
        "heldout_loss": final_loss,  # on held-out stories of the LM's own corpus
        # on the analysed (original) held-out text: off-distribution for the permuted-corpus control
        "heldout_loss_original": (final_loss if eval_rows_original is eval_rows
                                  else heldout_loss(model, eval_rows_original)),
        "threads": threads,
        "train_seconds": time.perf_counter() - started,
        "cpu_seconds": time.process_time() - cpu_started,  # whole call, process CPU
    }
    with atomic_path(out_dir) as tmp:
        save_toy_lm(model, transformer_config, tokenizer_dir, tmp)
        write_json(tmp / METRICS_FILE, metrics)
        write_json(tmp / DIRECTORY_PROVENANCE, record)
    return metrics


def save_toy_lm(model, transformer_config: dict[str, Any], tokenizer_dir: str | Path, out_dir: str | Path) -> None:
    """Write config.json, model.safetensors and a copy of the tokenizer into `out_dir`."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / CONFIG_FILE).write_text(json.dumps(transformer_config, indent=2) + "\n")
    state = {name: tensor.detach().contiguous() for name, tensor in model.state_dict().items()}
    save_file(state, str(out / WEIGHTS_FILE))
    shutil.copytree(tokenizer_dir, out / TOKENIZER_DIR, dirs_exist_ok=True)


def load_toy_lm(path: str | Path, device: str = "cpu", dtype: str = "float32"):
    """Reload a toy LM checkpoint as a `HookedTransformer` in eval mode, its tokenizer attached."""
    from safetensors.torch import load_file

    path = Path(path)
    if not (path / CONFIG_FILE).exists() or not (path / WEIGHTS_FILE).exists():
        raise FileNotFoundError(f"{path} is not a toy LM checkpoint ({CONFIG_FILE} + {WEIGHTS_FILE}); "
                                "rebuild its toy_lm target")
    transformer_config = json.loads((path / CONFIG_FILE).read_text())
    model = build_model(transformer_config, path / TOKENIZER_DIR, device=device, dtype=dtype)
    state = {name: tensor.to(getattr(torch, dtype)) if tensor.is_floating_point() else tensor
             for name, tensor in load_file(str(path / WEIGHTS_FILE), device=str(device)).items()}
    model.load_state_dict(state, strict=True)
    model.eval()
    return model
