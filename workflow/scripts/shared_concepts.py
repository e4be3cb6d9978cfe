"""Snakemake script of rule `shared_concepts`: every statistic of each contrast side by side (CSV + HTML)."""

import logging

from featsim.rulelog import rule_log
from featsim.shared_concepts import shared_concepts_table
from featsim.summary import read_summary
from featsim.targets.concepts import write_shared_concepts

sm = snakemake  # noqa: F821 (injected by Snakemake)
rule_log(sm.log[0])
log = logging.getLogger("shared_concepts")

p = sm.params
keys = [(cmp, pairing) for cmp in p.comparisons for pairing in p.pairings]
summaries = {key: read_summary(path) for key, path in zip(keys, sm.input.summaries, strict=True)}
semantic = {cmp: read_summary(path) for cmp, path in zip(p.comparisons, sm.input.semantic, strict=True)}
agreement = {pairing: read_summary(path) for pairing, path in zip(p.pairings, sm.input.agreement, strict=True)}
contrasts = {pairing: read_summary(path) for pairing, path in zip(p.pairings, sm.input.contrasts, strict=True)}
table = shared_concepts_table(p.contrasts, summaries, semantic, agreement, contrasts, p.semantic_pairing,
                              alpha=float(p.alpha))
write_shared_concepts(table, sm.output.table, sm.output.html, contrasts=p.contrasts, correction=p.correction,
                      alpha=float(p.alpha), ids={"experiment": sm.wildcards.exp, "rule": sm.rule})
for row in table.itertuples():
    log.info("%s vs %s | %s %s (%s): X %.4g, Y %.4g, separates: %s", row.x, row.y, row.scope, row.statistic,
             row.pairing, row.value_x, row.value_y, row.separates)
