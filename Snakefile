# featsim: do two language models learn the same SAE features?  Table of contents of the workflow.
from pathlib import Path

from snakemake.utils import min_version

min_version("9.0")

import os

# envs/featsim.post-deploy.sh installs featsim from this checkout into a conda-deployed environment.
os.environ["FEATSIM_WORKFLOW_DIR"] = str(Path(workflow.basedir).resolve())

# `--configfile X` is the whole experiment; the embedded toy default is loaded only without one.
if not workflow.overwrite_configfiles:
    configfile: Path(workflow.basedir) / "config.yaml"

import sys

from featsim.config import load_schema
from featsim.preflight import check_workflow_config

# Schema, then every check knowable before a job (the same as `featsim validate`): a typo stops the run
# here, before Snakemake deletes or silently keeps an output.
check_workflow_config(config, workflow.overwrite_configfiles or [Path(workflow.basedir) / "config.yaml"],
                      load_schema(),
                      workflow.basedir, warn=lambda line: print(f"featsim: {line}", file=sys.stderr))

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
include: "rules/steering.smk"
include: "rules/concepts.smk"
include: "rules/report.smk"


rule all:
    input:
        all_targets(),
    default_target: True
