"""Snakemake script of rule `semantic_summary`: concept-subspace score jsons -> CSV (+ provenance) and HTML."""

import logging

from featsim.summary import summarize_semantic, write_summary_target
from featsim.rulelog import rule_log

sm = snakemake  # noqa: F821 (injected by Snakemake)
rule_log(sm.log[0])
log = logging.getLogger("semantic_summary")

wc = sm.wildcards
table = summarize_semantic(sm.input.scores, wc.cmp, wc.pairing, sm.params.correction,
                           alpha=float(sm.params.alpha))
write_summary_target(table, sm.output.table, sm.output.html, f"{wc.cmp} / {wc.pairing}: concept-subspace scores",
                     {"correction": sm.params.correction, "alpha": sm.params.alpha},
                     kind="semantic_summary", experiment=wc.exp, comparison=wc.cmp, pairing=wc.pairing)
for metric, rows in table.groupby("metric"):
    counts = rows["status"].value_counts()
    log.info("%s: %d concept x layer cells, %d scored, %d underpowered, %d not scored, %d significant (%s)", metric,
             len(rows), counts.get("scored", 0), counts.get("underpowered", 0), counts.get("not_scored", 0),
             rows["significant"].sum(), sm.params.correction)
