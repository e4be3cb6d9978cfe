"""TopK SAEs on a toy LM's residual stream, trained with sae-lens's LanguageModelSAETrainingRunner.

The training tokens are passed in memory (`override_dataset`, `override_model`): nothing is
downloaded. The output directory is sae-lens's own (`cfg.json`, `sae_weights.safetensors`, ...),
so `SAE.load_from_disk(dir)` works and `sae.cfg.metadata.hook_name` names the hook it was trained
on; featsim adds `metrics.json` (held-out FVU, L0, dead fraction) and `provenance.json`.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping

import numpy as np
import torch

from featsim.errors import ConfigError
from featsim.provenance import (DIRECTORY_PROVENANCE, atomic_path, make_provenance, read_directory_provenance,
                                write_json)
from featsim.toy.corpus import HELDOUT_FILE, TRAIN_FILE, TRAIN_PERMUTED_FILE
from featsim.toy.lm import load_toy_lm
from featsim.toy.reproducible import reproducible_torch
from featsim.toy.sequences import story_rows
from featsim.toy.settings import config_from_dict

METRICS_FILE = "metrics.json"
SAE_CORPUS_FILES = {"original": TRAIN_FILE, "permuted": TRAIN_PERMUTED_FILE}


@dataclass(frozen=True)
class ToySAEConfig:
    """Settings of one toy TopK SAE (config key `models.<m>.sae.toy`)."""

    CONFIG_KEY: ClassVar[str] = "models.<model>.sae.toy"
    d_sae: int = 256
    k: int = 8
    seed: int = 0  # SAE initialisation and activation shuffling
    training_tokens: int = 200_000
    lr: float = 2e-3
    corpus: str = "original"  # text the SAE is trained on: original (the analysed text) | permuted
    train_batch_size_tokens: int = 512
    store_batch_size_prompts: int = 16  # LM rows per forward pass that fills the activation buffer
    n_batches_in_buffer: int = 64  # buffer of n_batches_in_buffer * context tokens, shuffled
    lr_decay_fraction: float = 0.2  # linear decay to 0 over this final fraction of steps
    dead_feature_window: int = 100  # steps without firing after which the AuxK loss revives a latent
    eval_rows: int = 256  # held-out rows for the reported FVU / L0 / dead fraction

    def __post_init__(self) -> None:
        key = self.CONFIG_KEY
        if not 1 <= self.k <= self.d_sae:
            raise ConfigError(f"{key}.k", f"must be in [1, d_sae={self.d_sae}], got {self.k}")
        if self.corpus not in SAE_CORPUS_FILES:
            raise ConfigError(f"{key}.corpus", f"must be one of {sorted(SAE_CORPUS_FILES)}, got {self.corpus!r}")
        if self.training_tokens < self.train_batch_size_tokens:
            raise ConfigError(f"{key}.training_tokens",
                              f"{self.training_tokens} is less than one batch ({self.train_batch_size_tokens})")
        if not 0 <= self.lr_decay_fraction < 1:
            raise ConfigError(f"{key}.lr_decay_fraction", f"must be in [0, 1), got {self.lr_decay_fraction}")

    @classmethod
    def from_config(cls, values: dict[str, Any], key: str = CONFIG_KEY) -> "ToySAEConfig":
        """Build from the `models.<m>.sae.toy` config slice (`key` names it in errors); unknown keys are an error."""
        return config_from_dict(cls, values, key)


def hook_name(layer: int) -> str:
    """The residual-stream hook the toy SAE of `layer` reads."""
    return f"blocks.{layer}.hook_resid_post"


def _runner_config(cfg: ToySAEConfig, d_in: int, layer: int, context_size: int, special_ids: list[int],
                   model_name: str, dataset_path: str, output_path: str, config_key: str):
    from sae_lens import LanguageModelSAERunnerConfig, LoggingConfig, TopKTrainingSAEConfig

    if cfg.n_batches_in_buffer * context_size < cfg.train_batch_size_tokens:
        raise ConfigError(f"{config_key}.n_batches_in_buffer",
                          f"n_batches_in_buffer * context ({cfg.n_batches_in_buffer} * {context_size}) must be "
                          f">= train_batch_size_tokens ({cfg.train_batch_size_tokens}); sae-lens refuses smaller buffers")
    total_steps = cfg.training_tokens // cfg.train_batch_size_tokens
    return LanguageModelSAERunnerConfig(
        sae=TopKTrainingSAEConfig(d_in=d_in, d_sae=cfg.d_sae, k=cfg.k, device="cpu", dtype="float32"),
        model_name=model_name,
        model_from_pretrained_kwargs={},  # the LM is passed in, never loaded by sae-lens
        hook_name=hook_name(layer),
        dataset_path=dataset_path,  # recorded in metadata only: the rows come from override_dataset
        is_dataset_tokenized=True,
        streaming=False,
        context_size=context_size,
        prepend_bos=False,  # rows already start with <bos>
        exclude_special_tokens=special_ids,
        training_tokens=cfg.training_tokens,
        train_batch_size_tokens=cfg.train_batch_size_tokens,
        store_batch_size_prompts=cfg.store_batch_size_prompts,
        n_batches_in_buffer=cfg.n_batches_in_buffer,
        lr=cfg.lr,
        lr_decay_steps=int(cfg.lr_decay_fraction * total_steps),
        dead_feature_window=cfg.dead_feature_window,
        seed=cfg.seed,
        device="cpu",
        dtype="float32",
        logger=LoggingConfig(log_to_wandb=False),
        n_checkpoints=0,
        checkpoint_path=None,
        output_path=output_path,
        verbose=False,
    )


@torch.no_grad()
def sae_quality(sae, model, rows: np.ndarray, special_ids: list[int], batch_size: int = 64) -> dict[str, float]:
    """FVU, mean L0 and dead-latent fraction of `sae` on the non-special tokens of `rows` [n, ctx].

    FVU = sum ||x - x_hat||^2 / sum ||x - mean(x)||^2 over tokens; dead = never active on these tokens.
    """
    hook = sae.cfg.metadata.hook_name
    layer = int(hook.split(".")[1])
    acts_blocks = []
    for start in range(0, len(rows), batch_size):
        tokens = torch.as_tensor(rows[start:start + batch_size])  # [b, ctx]
        _, cache = model.run_with_cache(tokens, names_filter=[hook], stop_at_layer=layer + 1)
        keep = ~torch.isin(tokens, torch.as_tensor(special_ids))
        acts_blocks.append(cache[hook][keep])  # [n_kept, d_in]
    acts = torch.cat(acts_blocks).to(sae.W_dec.dtype)  # [n_tokens, d_in]
    codes = sae.encode(acts)  # [n_tokens, d_sae]
    recon = sae.decode(codes)  # [n_tokens, d_in]
    residual = ((acts - recon) ** 2).sum().item()
    total = ((acts - acts.mean(0)) ** 2).sum().item()
    active = codes != 0
    return {
        "fvu": residual / total,
        "l0": active.sum(1).float().mean().item(),
        "dead_fraction": (~active.any(0)).float().mean().item(),
        "n_eval_tokens": int(acts.shape[0]),
    }


def train_toy_sae(cfg: ToySAEConfig, lm_dir: str | Path, corpus_dir: str | Path, layer: int,
                  out_dir: str | Path, threads: int = 1, ids: Mapping[str, Any] | None = None,
                  model_entry: str = "<model>") -> dict[str, Any]:
    """Train a TopK SAE on `blocks.{layer}.hook_resid_post` of the toy LM in `lm_dir`; save it atomically.

    Seeds torch with `cfg.seed` before sae-lens builds the SAE (sae-lens's own `seed` field does not
    seed torch) and runs deterministic algorithms on `threads` threads, so a rerun with the same
    config and thread count gives bit-identical weights. Returns the held-out quality metrics.
    Its provenance: `cfg`, `layer`, `ids` and the LM's model and config hash; `model_entry` names the
    config entry in error messages.
    """
    lm_record = read_directory_provenance(lm_dir)
    record = make_provenance(asdict(cfg), kind="toy_sae", **dict(ids or {}), layer=int(layer),
                             lm_model=lm_record.get("model"), lm_config_hash=lm_record["config_hash"])
    with reproducible_torch(threads):
        return _train_toy_sae(cfg, lm_dir, Path(corpus_dir), layer, out_dir, threads, record, model_entry)


def _train_toy_sae(cfg: ToySAEConfig, lm_dir: str | Path, corpus_dir: Path, layer: int, out_dir: str | Path,
                   threads: int, record: dict, model_entry: str) -> dict[str, Any]:
    from datasets import Dataset
    from sae_lens import SAE, LanguageModelSAETrainingRunner

    started, cpu_started = time.perf_counter(), time.process_time()
    model = load_toy_lm(lm_dir)
    if not 0 <= layer < model.cfg.n_layers:
        raise ConfigError(f"models.{model_entry}.layers", f"layer {layer} is not in the toy LM at {lm_dir} "
                          f"({model.cfg.n_layers} layers)")
    tokenizer = model.tokenizer
    special_ids = sorted(tokenizer.all_special_ids)
    context_size = model.cfg.n_ctx
    train_path = corpus_dir / SAE_CORPUS_FILES[cfg.corpus]
    train_rows = story_rows(tokenizer, train_path, context_size)  # [n_rows, ctx]
    eval_rows = story_rows(tokenizer, corpus_dir / HELDOUT_FILE, context_size, max_rows=cfg.eval_rows)

    with atomic_path(out_dir) as tmp:
        runner_cfg = _runner_config(cfg, model.cfg.d_model, layer, context_size, special_ids,
                                    model_name=model.cfg.model_name, dataset_path=str(train_path),
                                    output_path=str(tmp), config_key=f"models.{model_entry}.sae.toy")
        torch.manual_seed(cfg.seed)
        with warnings.catch_warnings():
            # sae-lens warns that the in-memory rows are fewer than the training tokens (rows are reused)
            warnings.filterwarnings("ignore", message="The training dataset contains fewer samples")
            runner = LanguageModelSAETrainingRunner(
                runner_cfg, override_dataset=Dataset.from_dict({"input_ids": train_rows}), override_model=model)
            runner.run()
        train_seconds = time.perf_counter() - started
        sae = SAE.load_from_disk(str(tmp))
        metrics = {
            "hook_name": sae.cfg.metadata.hook_name,
            "d_in": sae.cfg.d_in,
            "d_sae": sae.cfg.d_sae,
            "k": cfg.k,
            "training_tokens": cfg.training_tokens,
            "training_corpus": cfg.corpus,
            **sae_quality(sae, model, eval_rows, special_ids),
            "threads": threads,
            "train_seconds": train_seconds,
            "cpu_seconds": time.process_time() - cpu_started,  # whole call, process CPU
        }
        write_json(tmp / METRICS_FILE, metrics)
        write_json(tmp / DIRECTORY_PROVENANCE, {**record, "hook_name": metrics["hook_name"]})
    return metrics
