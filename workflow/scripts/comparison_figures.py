"""Snakemake script of rules `comparison_figures` and `semantic_comparison_figures`: every comparison side by side,
one figure per metric, in one scope (whole space, or concept subspaces)."""

import logging

from featsim.rulelog import rule_log
from featsim.summary import read_summary
from featsim.targets.figures import write_comparison_figures

sm = snakemake  # noqa: F821 (injected by Snakemake)
rule_log(sm.log[0])
log = logging.getLogger(sm.rule)

comparisons = sm.params.comparisons  # config `comparisons`, in config order (the order of the summaries input)
summaries = {name: read_summary(path) for name, path in zip(comparisons, sm.input.summaries)}
descriptions = {name: entry.get("description", "") for name, entry in comparisons.items()}
write_comparison_figures(summaries, sm.wildcards.pairing, list(sm.params.metrics), list(sm.output.figures),
                         descriptions, sm.params.correction, scope=sm.params.scope,
                         pairs_output=getattr(sm.output, "pairs", None))
log.info("wrote %d %s cross-comparison figures for pairing %s", len(sm.output), sm.params.scope,
         sm.wildcards.pairing)
