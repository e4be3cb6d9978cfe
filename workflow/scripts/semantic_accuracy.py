"""Snakemake script of rule `semantic_accuracy`: concept membership vs the toy corpus's word -> category map."""

import logging

from featsim.rulelog import rule_log
from featsim.targets.semantic import write_accuracy

sm = snakemake  # noqa: F821 (injected by Snakemake)
rule_log(sm.log[0])
log = logging.getLogger("semantic_accuracy")

wc = sm.wildcards
result = write_accuracy(
    sm.input.labels, list(sm.input.members), list(sm.input.concepts), sm.input.corpus,
    sm.output.accuracy, int(sm.params.min_examples), float(sm.params.truth_min_fraction),
    ids={"experiment": wc.exp, "model": wc.model, "layer": int(wc.layer), "rule": sm.rule},
)
for concept, row in result["concepts"].items():
    log.info("%-12s assigned %3d true %3d correct %3d precision %s recall %s", concept, row["n_assigned"],
             row["n_true"], row["n_correct"], row["precision"], row["recall"])
log.info("overall %s", result["overall"])
