"""Snakemake script of rule `semantic_figures`: concept x layer-pair grids of one comparison, per metric."""

import logging

from featsim.figures import GridLabels
from featsim.rulelog import rule_log
from featsim.summary import read_summary
from featsim.targets.figures import write_semantic_figures

sm = snakemake  # noqa: F821 (injected by Snakemake)
rule_log(sm.log[0])
log = logging.getLogger("semantic_figures")

wc = sm.wildcards
labels = GridLabels.for_comparison(wc.cmp, wc.pairing, sm.params.comparison, sm.params.correction)
write_semantic_figures(read_summary(sm.input.summary), labels, list(sm.params.metrics), list(sm.output.grids))
log.info("wrote %d concept grids for %s / %s", len(sm.output.grids), wc.cmp, wc.pairing)
