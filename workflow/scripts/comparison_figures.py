"""Snakemake script of rule `comparison_figures`: every comparison side by side, one figure per metric."""

import logging

from featsim.figures import write_comparison_figures
from featsim.summary import read_summary
from featsim.rulelog import rule_log

sm = snakemake  # noqa: F821 (injected by Snakemake)
rule_log(sm.log[0])
log = logging.getLogger("comparison_figures")

comparisons = sm.params.comparisons  # config `comparisons`, in config order (the order of the summaries input)
summaries = {name: read_summary(path) for name, path in zip(comparisons, sm.input.summaries)}
descriptions = {name: entry.get("description", "") for name, entry in comparisons.items()}
write_comparison_figures(summaries, sm.wildcards.pairing, list(sm.params.metrics), list(sm.output.figures),
                         sm.output.pairs, descriptions, sm.params.correction)
log.info("wrote %d cross-comparison figures for pairing %s", len(sm.output), sm.wildcards.pairing)
