"""Rules toy_sae_<model>: train a TopK SAE with sae-lens on each layer's residual stream of a toy LM, one
process for all layers of a model entry (sae-lens is imported once)."""

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything here is local; never reach for the hub

from featsim.rulelog import rule_log  # noqa: E402
from featsim.toy.sae import ToySAEConfig, train_toy_sae  # noqa: E402

snakemake = globals()["snakemake"]  # injected by Snakemake's script: directive
rule_log(snakemake.log[0])

model = snakemake.params.model
sae_config = ToySAEConfig.from_config(dict(snakemake.params.toy), key=f"models.{model}.sae.toy")
for layer, out_dir in zip(snakemake.params.layers, snakemake.output, strict=True):
    metrics = train_toy_sae(sae_config, snakemake.input.lm, snakemake.input.corpus, int(layer), out_dir,
                            threads=snakemake.threads, model_entry=model,
                            ids={"experiment": snakemake.wildcards.exp, "model": model, "rule": snakemake.rule})
    print(f"toy SAE {model} L{layer} written to {out_dir}: {json.dumps(metrics)}", flush=True)
