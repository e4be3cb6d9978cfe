"""Snakemake script of rule `tokens`: documents -> tokens.zarr (rows, keep-mask, tokenizer attrs)."""

import logging
from pathlib import Path

from featsim.layout import experiment_dir
from featsim.rulelog import rule_log
from featsim.targets.data import make_tokens

sm = snakemake  # noqa: F821 (injected by Snakemake)
rule_log(sm.log[0])
log = logging.getLogger("tokens")

attrs = make_tokens(Path(sm.output.tokens), sm.params.data, sm.params.models, sm.params.legacy,
                    exp_dir=experiment_dir(sm.wildcards.exp), ids={"experiment": sm.wildcards.exp, "rule": sm.rule},
                    spans=bool(sm.params.get("spans", False)))
log.info("tokens: %d rows of %d (%d unmasked) from %d documents, tokenizer %s", attrs["n_sequences"],
         sm.params.data["context_length"], attrs["n_unmasked"], attrs["n_documents"], attrs["tokenizer"])
