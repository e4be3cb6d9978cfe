"""Snakemake script of rules `activations_<model>`: one LM forward per batch writes every layer's store."""

import logging
from pathlib import Path

import torch

from featsim.layout import experiment_dir
from featsim.rulelog import rule_log
from featsim.targets.activations import make_activations

sm = snakemake  # noqa: F821 (injected by Snakemake)
rule_log(sm.log[0])
log = logging.getLogger("activations")

torch.set_num_threads(sm.threads)
outputs = {layer: Path(path) for layer, path in zip(sm.params.layers, sm.output)}
params = sm.params
log.info("model %s (LM of %s), layers %s, read by %s", params.model, params.lm_owner, params.layers, list(params.users))
stats = make_activations(sm.input.tokens, outputs, params.model, params.lm_owner, params.lm, params.users, params.legacy,
                         experiment_dir(sm.wildcards.exp), dtype=params.runtime["dtype"], device=params.runtime["device"],
                         batch_size=params.runtime["batch_size"],
                         ids={"experiment": sm.wildcards.exp, "rule": sm.rule})
log.info("done: %.0f tokens/s over %d positions", stats["tokens_per_s"], stats["positions"])
