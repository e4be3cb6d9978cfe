"""Rule toy_sae: train a TopK SAE with sae-lens on one layer's residual stream of a toy LM."""

import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything here is local; never reach for the hub

from featsim.provenance import make_provenance  # noqa: E402
from featsim.toy.runlog import output_to_log  # noqa: E402
from featsim.toy.sae import ToySAEConfig, train_toy_sae  # noqa: E402

snakemake = globals()["snakemake"]  # injected by Snakemake's script: directive

with output_to_log(snakemake.log[0]):
    model = snakemake.wildcards.model
    sae_toy = dict(snakemake.params.toy)
    layer = int(snakemake.wildcards.layer)
    lm_record = json.loads((Path(snakemake.input.lm) / "provenance.json").read_text())
    record = make_provenance({"sae.toy": sae_toy, "lm.toy": dict(snakemake.params.lm)}, kind="toy_sae",
                             model=model, layer=layer, lm_model=lm_record.get("model"),
                             lm_config_hash=lm_record["config_hash"])
    metrics = train_toy_sae(ToySAEConfig.from_dict(sae_toy, key=f"models.{model}.sae.toy"), snakemake.input.lm,
                            snakemake.input.corpus, layer, snakemake.output[0], threads=snakemake.threads,
                            provenance=record, model_entry=model)
    print(f"toy SAE {model} L{layer} written to {snakemake.output[0]}: {json.dumps(metrics)}",
          flush=True)
