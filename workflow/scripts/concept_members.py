"""Snakemake script of rule `concept_members`: one concept's latents in every compared SAE layer."""

import logging

from featsim.rulelog import rule_log
from featsim.targets.semantic import write_members_layers

sm = snakemake  # noqa: F821 (injected by Snakemake)
rule_log(sm.log[0])
log = logging.getLogger("concept_members")

wc = sm.wildcards
tables = write_members_layers(sm.input.labels, sm.input.concept, sm.output.members, int(sm.params.min_examples),
                              sm.params.model_layers, ids={"experiment": wc.exp, "rule": sm.rule},
                              min_fraction=float(sm.params.min_fraction))
for (model, layer), members in zip(sm.params.model_layers, tables):
    log.info("concept %s, %s layer %s: %d latents (min_examples %s); top keywords %s", wc.concept, model, layer,
             len(members), sm.params.min_examples, members["top_keyword"].value_counts().head(10).to_dict())
