"""Snakemake script of rule `labels`: per-latent top activating positions with token, word and context."""

import logging

from featsim.labels import LabelsConfig
from featsim.rulelog import rule_log
from featsim.targets.labels import write_labels

sm = snakemake  # noqa: F821 (injected by Snakemake)
rule_log(sm.log[0])
log = logging.getLogger("labels")

wc = sm.wildcards
config = LabelsConfig.from_config(sm.params.labels)
log.info("labels of %s layer %s: %s", wc.model, wc.layer, config)
table = write_labels(sm.input.codes, sm.input.tokens, sm.output.labels, config,
                     ids={"experiment": wc.exp, "model": wc.model, "layer": int(wc.layer), "rule": sm.rule},
                     split_config=dict(sm.params.split))
alive = int((table["n_active"] > 0).sum())
log.info("%d latents, %d fire at least once; wrote %s", len(table), alive, sm.output.labels)
