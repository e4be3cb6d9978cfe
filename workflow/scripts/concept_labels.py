"""Snakemake script of rule `concept_labels`: the concept label of every latent of every compared SAE layer."""

import logging

from featsim.concept_labels import LabelRule
from featsim.rulelog import rule_log
from featsim.targets.concepts import write_concept_labels

sm = snakemake  # noqa: F821 (injected by Snakemake)
rule_log(sm.log[0])
log = logging.getLogger("concept_labels")

rule = LabelRule.from_config(sm.params.rule)
tables = write_concept_labels(sm.input.labels, sm.input.concepts, sm.output.labels, rule, sm.params.model_layers,
                              ids={"experiment": sm.wildcards.exp, "rule": sm.rule})
for (model, layer), table in zip(sm.params.model_layers, tables):
    log.info("%s layer %s: %d of %d latents labelled (%s); %s", model, layer, table["concept"].notna().sum(),
             len(table), rule, table["status"].value_counts().to_dict())
