"""Snakemake script of rule `browser`: the pair browser page and activation scatter of one layer pair."""

import logging

from featsim.alignment import comparison_rows
from featsim.browser import BrowserSettings
from featsim.rulelog import rule_log
from featsim.stores import open_codes
from featsim.targets.figures import build_browser

sm = snakemake  # noqa: F821 (injected by Snakemake)
rule_log(sm.log[0])
log = logging.getLogger("browser")

wc = sm.wildcards
entry = sm.params.comparison
title = f"{wc.cmp} / {wc.pairing}: {entry['a']} layer {wc.la} vs {entry['b']} layer {wc.lb}"
rows = comparison_rows(sm.input.tokens, dict(sm.params.split), sm.input.get("tokens_b"), sm.input.get("alignment"))
listed = build_browser(sm.input.pairs, sm.input.labels_a, sm.input.labels_b, open_codes(sm.input.codes_a),
                       open_codes(sm.input.codes_b), sm.output.html, sm.output.scatter,
                       BrowserSettings.from_config(sm.params.browser), title, rows=rows,
                       ids={"experiment": wc.exp, "comparison": wc.cmp, "pairing": wc.pairing, "layer_a": int(wc.la),
                            "layer_b": int(wc.lb), "rule": sm.rule})
log.info("%s: listed %d pairs", title, len(listed))
