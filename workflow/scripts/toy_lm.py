"""Rule toy_lm: train one toy transformer-lens LM on the (original or permuted) story corpus."""

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything here is local; never reach for the hub

from featsim.rulelog import rule_log  # noqa: E402
from featsim.toy.lm import ToyLMConfig, train_toy_lm  # noqa: E402

snakemake = globals()["snakemake"]  # injected by Snakemake's script: directive
rule_log(snakemake.log[0])

model = snakemake.wildcards.model
config = ToyLMConfig.from_config(dict(snakemake.params.toy), key=f"models.{model}.lm.toy")
metrics = train_toy_lm(config, snakemake.input.corpus, snakemake.output[0], threads=snakemake.threads,
                       ids={"experiment": snakemake.wildcards.exp, "model": model, "rule": snakemake.rule})
print(f"toy LM {model} written to {snakemake.output[0]}: {json.dumps(metrics)}", flush=True)
