"""Snakemake script of rule `alignment`: aligned row pairs of two token stores (same document, same character end)."""

import logging

from featsim.rulelog import rule_log
from featsim.targets.data import make_alignment

sm = snakemake  # noqa: F821 (injected by Snakemake)
rule_log(sm.log[0])
log = logging.getLogger("alignment")

wc = sm.wildcards
attrs = make_alignment(sm.input.tokens_a, sm.input.tokens_b, sm.output.alignment, wc.mode, float(sm.params.min_share),
                       ids={"experiment": wc.exp, "rule": sm.rule, "store_a": wc.store_a, "store_b": wc.store_b})
log.info("%s x %s (%s): %d pairs, aligned share %.3f", wc.store_a, wc.store_b, wc.mode, attrs["n_pairs"],
         attrs["aligned_share"])
