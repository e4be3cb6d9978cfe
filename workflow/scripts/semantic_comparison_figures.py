"""Snakemake script of rule `semantic_comparison_figures`: concept-level scores of every comparison side by side."""

import logging

from featsim.figures import write_semantic_comparison_figures
from featsim.summary import read_summary
from featsim.rulelog import rule_log

sm = snakemake  # noqa: F821 (injected by Snakemake)
rule_log(sm.log[0])
log = logging.getLogger("semantic_comparison_figures")

comparisons = sm.params.comparisons  # config `comparisons`, in config order (the order of the summaries input)
semantic = {name: read_summary(path) for name, path in zip(comparisons, sm.input.summaries)}
descriptions = {name: entry.get("description", "") for name, entry in comparisons.items()}
write_semantic_comparison_figures(semantic, sm.wildcards.pairing, list(sm.params.metrics), list(sm.output.figures),
                                  descriptions, sm.params.correction)
log.info("wrote %d concept-level cross-comparison figures for pairing %s", len(sm.output.figures),
         sm.wildcards.pairing)
