"""Snakemake script of rules `semantic_<cmp>`: pair and score one concept in every layer cell of a comparison."""

import logging

from featsim.rulelog import rule_log
from featsim.targets.semantic import ConceptCell, score_concept_cells

sm = snakemake  # noqa: F821 (injected by Snakemake)
rule_log(sm.log[0])
log = logging.getLogger("semantic")

wc, inputs = sm.wildcards, sm.input
cells = [
    ConceptCell(layer_a=int(cell["layer_a"]), layer_b=int(cell["layer_b"]), codes_a=inputs.codes_a[i],
                codes_b=inputs.codes_b[i], labels_a=inputs.labels_a[i], labels_b=inputs.labels_b[i],
                members_a=inputs.members_a[i], members_b=inputs.members_b[i], decoder_a=inputs.decoder_a[i],
                decoder_b=inputs.decoder_b[i], pairs=cell["pairs"],
                scores={metric: tuple(files) for metric, files in cell["scores"].items()})
    for i, cell in enumerate(sm.params.cells)  # the cells of the input lists, in the same layer_pairs order
]
records = score_concept_cells(
    cells, inputs.concept, variant_config=dict(sm.params.variant), correlation_config=dict(sm.params.correlation),
    min_latents=int(sm.params.min_latents), null_config=dict(sm.params.null), metric_options=dict(sm.params.options),
    pairing=wc.pairing, ids={"experiment": wc.exp, "comparison": sm.params.comparison, "concept": wc.concept,
                             "pairing": wc.pairing, "rule": sm.rule}, threads=sm.threads,
    tokens_path=inputs.tokens, split_config=dict(sm.params.split), alpha=float(sm.params.alpha),
    tokens_b_path=inputs.get("tokens_b"), alignment_path=inputs.get("alignment"))
for record in records:
    log.info("concept %s %s A%s/B%s: %s n=%s observed=%s p=%s flags=%s %s", wc.concept, record.get("metric"),
             record.get("layer_a"), record.get("layer_b"), record["status"], record.get("n_pairs"),
             record.get("observed"), record.get("p_value"), record.get("flags"), record.get("reason") or "")
