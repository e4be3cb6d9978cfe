#!/bin/sh
# Snakemake runs this inside the freshly built envs/featsim.yaml environment (from a copy under
# .snakemake/conda/, with the run's working directory as cwd). It installs featsim itself, editable, from
# the workflow checkout, so jobs import the code of the workflow they belong to; the dependencies are
# already in the environment (--no-deps). The Snakefile exports the checkout as FEATSIM_WORKFLOW_DIR.
set -eu
root="${FEATSIM_WORKFLOW_DIR:-}"
if [ -z "$root" ] || ! grep -qs '^name = "featsim"' "$root/pyproject.toml"; then
    echo "featsim post-deploy: FEATSIM_WORKFLOW_DIR='$root' is not a featsim checkout (no pyproject.toml" \
         "naming featsim). The Snakefile sets it; run snakemake with featsim's Snakefile." >&2
    exit 1
fi
python -m pip install --no-deps --editable "$root"
