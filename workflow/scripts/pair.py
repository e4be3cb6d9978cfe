"""Snakemake script of rule `pair`: pair one layer cell's latents by one named variant, write pairs + diagnostics."""

import logging

from featsim.rulelog import rule_log
from featsim.targets.pairing import write_pairs

sm = snakemake  # noqa: F821 (injected by Snakemake)
rule_log(sm.log[0])
log = logging.getLogger("pair")

wc = sm.wildcards
log.info("pairing variant %s: %s", wc.pairing, dict(sm.params.variant))
pairs = write_pairs(
    sm.input.corr,
    sm.input.labels_a,
    sm.input.labels_b,
    sm.params.variant,
    sm.output.pairs,
    sm.output.diagnostics,
    key=f"pairings.{wc.pairing}",
    ids={
        "experiment": wc.exp,
        "comparison": wc.cmp,
        "pairing": wc.pairing,
        "layer_a": int(wc.la),
        "layer_b": int(wc.lb),
        "rule": sm.rule,
    },
)
for step in pairs.diagnostics["filter_counts"]:
    log.info("after %-16s %d candidate pairs", step["step"], step["n_pairs"])
log.info("%d pairs, mean corr %s", len(pairs), pairs.diagnostics["mean_corr_pairs"])
