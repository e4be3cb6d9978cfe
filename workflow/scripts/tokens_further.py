"""Snakemake script of rule `tokens_further`: the experiment's documents tokenized by another model's tokenizer."""

import logging
from pathlib import Path

from featsim.layout import experiment_dir
from featsim.rulelog import rule_log
from featsim.targets.data import make_further_tokens

sm = snakemake  # noqa: F821 (injected by Snakemake)
rule_log(sm.log[0])
log = logging.getLogger("tokens")

params = sm.params
attrs = make_further_tokens(Path(sm.output.tokens), params.data, params.lm, params.owner, params.legacy,
                            exp_dir=experiment_dir(sm.wildcards.exp), experiment_tokens=sm.input.experiment_tokens,
                            ids={"experiment": sm.wildcards.exp, "rule": sm.rule, "store": sm.wildcards.store})
log.info("store %s: %d rows (%d unmasked), tokenizer %s", sm.wildcards.store, attrs["n_sequences"],
         attrs["n_unmasked"], attrs["tokenizer"])
