"""Rule toy_corpus: story corpus, concept-permuted twin, ground truth (word -> category) and tokenizer."""

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything here is local; never reach for the hub

from featsim.rulelog import rule_log  # noqa: E402
from featsim.toy.corpus import ToyCorpusConfig, build_corpus_dir  # noqa: E402

snakemake = globals()["snakemake"]  # injected by Snakemake's script: directive
rule_log(snakemake.log[0])

stats = build_corpus_dir(ToyCorpusConfig.from_config(dict(snakemake.params.toy)), snakemake.output[0],
                         ids={"experiment": snakemake.wildcards.exp, "rule": snakemake.rule})
print(f"toy corpus written to {snakemake.output[0]}: {json.dumps(stats)}", flush=True)
