"""Snakemake script of rule `comparison_overview`: one table of every comparison's significant cells and effects."""

import logging

from featsim.rulelog import rule_log
from featsim.summary import comparison_overview, read_summary
from featsim.targets.summary import write_summary_target

sm = snakemake  # noqa: F821 (injected by Snakemake)
rule_log(sm.log[0])
log = logging.getLogger("comparison_overview")

names = list(sm.params.comparisons)  # config order = the order of both summaries inputs
summaries = {name: read_summary(path) for name, path in zip(names, sm.input.summaries)}
semantic = {name: read_summary(path) for name, path in zip(names, sm.input.semantic)}
table = comparison_overview(summaries, semantic)
write_summary_target(table, sm.output.table, sm.output.html,
                     f"pairing {sm.wildcards.pairing}: all comparisons at a glance", {"correction": sm.params.correction},
                     ids={"kind": sm.rule, "experiment": sm.wildcards.exp, "pairing": sm.wildcards.pairing,
                          "comparisons": names})
log.info("overview of %d comparisons (%d with concept scores)", len(summaries), len(semantic))
