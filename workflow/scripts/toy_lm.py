"""Rule toy_lm: train one toy transformer-lens LM on the (original or permuted) story corpus."""

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything here is local; never reach for the hub

from featsim.provenance import make_provenance, read_directory_provenance  # noqa: E402
from featsim.toy.lm import ToyLMConfig, train_toy_lm  # noqa: E402
from featsim.rulelog import rule_log  # noqa: E402

snakemake = globals()["snakemake"]  # injected by Snakemake's script: directive
rule_log(snakemake.log[0])

model = snakemake.wildcards.model
lm_toy = dict(snakemake.params.toy)
corpus_record = read_directory_provenance(snakemake.input.corpus)
record = make_provenance(lm_toy, kind="toy_lm", model=model, corpus_config_hash=corpus_record["config_hash"])
metrics = train_toy_lm(ToyLMConfig.from_config(lm_toy, key=f"models.{model}.lm.toy"), snakemake.input.corpus,
                       snakemake.output[0], threads=snakemake.threads, provenance=record)
print(f"toy LM {model} written to {snakemake.output[0]}: {json.dumps(metrics)}", flush=True)
