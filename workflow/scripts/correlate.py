"""Snakemake script of rule `correlate`: top-k correlation partners of one layer pair, both directions."""

import logging
import time

import numba

from featsim.rulelog import rule_log
from featsim.targets.correlate import correlate_code_stores

sm = snakemake  # noqa: F821 (injected by Snakemake)
rule_log(sm.log[0])
log = logging.getLogger("correlate")

numba.set_num_threads(max(1, min(sm.threads, numba.config.NUMBA_NUM_THREADS)))
wc = sm.wildcards
models = sm.params.models  # the compared model entries, for provenance (they also fix the input paths)
ids = {"experiment": wc.exp, "comparison": wc.cmp, "model_a": models["a"], "model_b": models["b"],
       "layer_a": int(wc.la), "layer_b": int(wc.lb), "rule": sm.rule}
started = time.perf_counter()
result = correlate_code_stores(sm.input.codes_a, sm.input.codes_b, sm.output.corr, dict(sm.params.correlation), ids,
                               tokens_path=sm.input.tokens, split_config=dict(sm.params.split),
                               tokens_b_path=sm.input.get("tokens_b"), alignment_path=sm.input.get("alignment"))
log.info("%s layer %s x %s layer %s: %s in %.1f s", models["a"], wc.la, models["b"], wc.lb,
         result.summary(), time.perf_counter() - started)
