"""Snakemake script of rule `score`: every metric and its permutation null on one layer pair's pairs."""

from featsim.rulelog import rule_log
from featsim.targets.scoring import score_cell_metrics

sm = snakemake  # noqa: F821 (injected by Snakemake)
rule_log(sm.log[0])

wc = sm.wildcards
score_cell_metrics(
    sm.input.pairs, sm.input.decoder_a, sm.input.decoder_b,
    dict(zip(sm.params.metrics, zip(sm.output.scores, sm.output.nulls))),
    null_config=dict(sm.params.null), metric_options=dict(sm.params.options),
    ids={"experiment": wc.exp, "comparison": wc.cmp, "pairing": wc.pairing, "layer_a": int(wc.la),
         "layer_b": int(wc.lb), "rule": sm.rule},
    threads=sm.threads, alpha=float(sm.params.alpha),
)
