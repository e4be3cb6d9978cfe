"""Snakemake script of rule `figures`: layer-grid heatmaps, null histograms and many-to-1 histogram of one
comparison/pairing."""

import logging

from featsim.figures import GridLabels
from featsim.rulelog import rule_log
from featsim.summary import read_summary
from featsim.targets.figures import write_layer_figures

sm = snakemake  # noqa: F821 (injected by Snakemake)
rule_log(sm.log[0])
log = logging.getLogger("figures")

wc = sm.wildcards
labels = GridLabels.for_comparison(wc.cmp, wc.pairing, sm.params.comparison, sm.params.correction)
outputs = {key: getattr(sm.output, key) for key in ("observed", "z", "null", "n_pairs", "correlation", "many_to_one")}
write_layer_figures(read_summary(sm.input.summary), sm.input.scores, sm.input.diagnostics, labels,
                    list(sm.params.metrics), outputs, int(sm.params.null_histograms))
log.info("wrote %d figures for %s / %s", len(sm.output), wc.cmp, wc.pairing)
