# featsim: do two language models learn the same SAE features?  Table of contents of the workflow.
from pathlib import Path

from snakemake.utils import min_version

min_version("9.0")

# `--configfile X` is the whole experiment; the embedded toy default is loaded only without one.
if not workflow.overwrite_configfiles:
    configfile: Path(workflow.basedir) / "config.yaml"

from featsim.config import load_schema, validate_config

validate_config(config, load_schema(Path(workflow.basedir) / "workflow" / "schemas" / "config.schema.yaml"))

report: "workflow/report/workflow.rst"


include: "rules/common.smk"
include: "rules/toy.smk"
include: "rules/data.smk"
include: "rules/activations.smk"
include: "rules/labels.smk"
include: "rules/correlate.smk"
include: "rules/pairing.smk"
include: "rules/scoring.smk"
include: "rules/semantic.smk"
include: "rules/report.smk"


rule all:
    input:
        all_targets(),
    default_target: True
