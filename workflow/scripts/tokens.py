"""Snakemake script of rule `tokens`: documents -> tokens.zarr (rows, keep-mask, tokenizer attrs)."""

import logging
from pathlib import Path

from featsim.layout import experiment_dir
from featsim.provenance import make_provenance
from featsim.tokens import make_tokens
from featsim.rulelog import rule_log

sm = snakemake  # noqa: F821 (injected by Snakemake)
rule_log(sm.log[0])
log = logging.getLogger("tokens")

out = Path(sm.output.tokens)
config_slice = {"data": sm.params.data, "models": sm.params.models, "legacy": sm.params.legacy}
attrs = make_tokens(out, sm.params.data, sm.params.models, sm.params.legacy, exp_dir=experiment_dir(sm.wildcards.exp),
                    provenance=make_provenance(config_slice, experiment=sm.wildcards.exp, rule="tokens"),
                    spans=bool(sm.params.get("spans", False)), comparisons=sm.config["comparisons"])
log.info("tokens: %d rows of %d (%d unmasked) from %d documents, tokenizer %s", attrs["n_sequences"],
         sm.params.data["context_length"], attrs["n_unmasked"], attrs["n_documents"], attrs["tokenizer"])
