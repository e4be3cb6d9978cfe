"""Snakemake script of rules `summary` and `semantic_summary`: score jsons of one comparison/pairing in one scope
(whole space or concept subspaces) -> CSV (+ provenance) and HTML."""

import logging

from featsim.rulelog import rule_log
from featsim.summary import SCOPES, summarize
from featsim.targets.summary import write_summary_target

sm = snakemake  # noqa: F821 (injected by Snakemake)
rule_log(sm.log[0])
log = logging.getLogger(sm.rule)

wc, scope = sm.wildcards, sm.params.scope
table = summarize(sm.input.scores, getattr(sm.input, "diagnostics", []), wc.cmp, wc.pairing, sm.params.correction,
                  alpha=float(sm.params.alpha), scope=scope)
write_summary_target(table, sm.output.table, sm.output.html, f"{wc.cmp} / {wc.pairing}: {SCOPES[scope].label} scores",
                     {"correction": sm.params.correction, "alpha": sm.params.alpha},
                     ids={"kind": sm.rule, "experiment": wc.exp, "comparison": wc.cmp, "pairing": wc.pairing})
for metric, rows in table.groupby("metric"):
    counts = rows["status"].value_counts()
    log.info("%s: %d cells (%s), %d scored, %d underpowered, %d not scored, %d significant (%s)", metric, len(rows),
             SCOPES[scope].family, counts.get("scored", 0), counts.get("underpowered", 0),
             counts.get("not_scored", 0), rows["significant"].sum(), sm.params.correction)
