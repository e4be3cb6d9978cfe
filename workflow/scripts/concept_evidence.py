"""Snakemake script of rule `concept_evidence`: concept agreement and contrast tables of one pairing variant."""

import logging

from featsim.rulelog import rule_log
from featsim.targets.concepts import write_concept_evidence

sm = snakemake  # noqa: F821 (injected by Snakemake)
rule_log(sm.log[0])
log = logging.getLogger("concept_evidence")

comparisons = sm.params.comparisons
pairs = {cmp: list(sm.input[f"pairs__{cmp}"]) for cmp in comparisons}
corr = {cmp: list(sm.input[f"corr__{cmp}"]) for cmp in comparisons if f"corr__{cmp}" in sm.input.keys()}
labels = {(model, int(layer)): path for (model, layer), path in zip(sm.params.model_layers, sm.input.labels, strict=True)}
agreement, contrasts = write_concept_evidence(
    comparisons, pairs, corr, labels, sm.output.agreement, sm.output.contrasts, pairing=sm.wildcards.pairing,
    n_permutations=int(sm.params.permutations), seed=int(sm.params.seed), alternative=sm.params.alternative,
    alpha=float(sm.params.alpha), ids={"experiment": sm.wildcards.exp, "rule": sm.rule})
overall = agreement[agreement["concept"] == ""]
for row in overall.itertuples():
    log.info("CA %s A%s_B%s: %.3f of %d labelled pairs (null %.3f), p_holm %.2g, recall %.3f", row.comparison,
             row.layer_a, row.layer_b, row.agreement, row.n_labelled, row.null_mean, row.p_holm, row.recall)
for row in contrasts.itertuples():
    log.info("%s vs %s A%s_B%s %s: statistic %.4g, n %s, p_holm %.2g %s", row.comparison, row.contrast, row.layer_a,
             row.layer_b, row.test, row.statistic, row.n, row.p_holm, row.reason)
