"""Snakemake script of rule `summary`: score jsons of one comparison/pairing -> CSV (+ provenance) and HTML."""

import logging

from featsim.summary import summarize_scores, write_summary_target
from featsim.rulelog import rule_log

sm = snakemake  # noqa: F821 (injected by Snakemake)
rule_log(sm.log[0])
log = logging.getLogger("summary")

wc = sm.wildcards
table = summarize_scores(sm.input.scores, sm.input.diagnostics, wc.cmp, wc.pairing, sm.params.correction,
                         alpha=float(sm.params.alpha))
write_summary_target(table, sm.output.table, sm.output.html, f"{wc.cmp} / {wc.pairing}: whole-space scores",
                     {"correction": sm.params.correction, "alpha": sm.params.alpha},
                     kind="summary", experiment=wc.exp, comparison=wc.cmp, pairing=wc.pairing)
for metric, rows in table.groupby("metric"):
    counts = rows["status"].value_counts()
    log.info("%s: %d cells, %d scored, %d underpowered, %d not scored, %d significant (%s)", metric, len(rows),
             counts.get("scored", 0), counts.get("underpowered", 0), counts.get("not_scored", 0),
             rows["significant"].sum(), sm.params.correction)
