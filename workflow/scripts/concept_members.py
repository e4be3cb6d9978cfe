"""Snakemake script of rule `concept_members`: one concept's latents in every compared SAE layer."""

import logging
import sys

from featsim.semantic import write_members_layers

sm = snakemake  # noqa: F821 (injected by Snakemake)
sys.stderr = open(sm.log[0], "w", buffering=1)
logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
log = logging.getLogger("concept_members")

wc = sm.wildcards
ids = [{"experiment": wc.exp, "model": model, "layer": int(layer), "concept": wc.concept}
       for model, layer in sm.params.model_layers]
tables = write_members_layers(sm.input.labels, sm.input.concept, sm.output.members, int(sm.params.min_examples), ids)
for (model, layer), members in zip(sm.params.model_layers, tables):
    log.info("concept %s, %s layer %s: %d latents (min_examples %s); top keywords %s", wc.concept, model, layer,
             len(members), sm.params.min_examples, members["top_keyword"].value_counts().head(10).to_dict())
