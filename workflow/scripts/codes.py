"""Snakemake script of rule `codes`: an SAE's sparse codes, decoder and quality on the stored activations."""

import logging
from pathlib import Path

import torch

from featsim.layout import experiment_dir
from featsim.rulelog import rule_log
from featsim.targets.activations import make_codes

sm = snakemake  # noqa: F821 (injected by Snakemake)
rule_log(sm.log[0])
log = logging.getLogger("codes")

torch.set_num_threads(sm.threads)
wc, params = sm.wildcards, sm.params
out = Path(sm.output.codes)
meta = make_codes(sm.input.acts, wc.model, int(wc.layer), params.sae, params.activation, params.legacy,
                  exp_dir=experiment_dir(wc.exp), out_codes=out, out_decoder=sm.output.decoder, out_meta=sm.output.meta,
                  device=params.device, ids={"experiment": wc.exp, "model": wc.model, "layer": int(wc.layer),
                                             "rule": sm.rule})
quality = meta["quality"]
log.info("%s L%s at %s: FVU %.4f, L0 %.2f, dead %.1f%% over %d tokens", wc.model, wc.layer, meta["hook"],
         quality["fvu"], quality["mean_l0"], 100 * quality["dead_fraction"], quality["n_tokens"])
