"""Where every output of an experiment lives: the one owner of the results layout, for the rules and the library.

Templates use Snakemake's wildcard names ({exp}, {model}, {layer}, {cmp}, {pairing}, {metric}, {concept}, {la},
{lb}, {table}). `fill` sets some or all of them and leaves the rest as wildcards, so the same template serves a
rule's `output:` (nothing filled, or a list expanded over one wildcard), an input function (everything
filled) and the library (`in_experiment`: the same file under an explicit experiment directory). Files that
sit beside another carry a sibling suffix (`sibling`), never a name rebuilt by string surgery.
"""

from __future__ import annotations

import os
import re
import string
from pathlib import Path

RESULTS = "results/{exp}"
"""An experiment's directory, relative to the working directory."""

CELL = "A{la}_B{lb}"
"""A layer cell of a comparison: layer la of side a against layer lb of side b (also its label in tables)."""
_CELL_LABEL = re.compile(r"^A(?P<la>\d+)_B(?P<lb>\d+)$")

# ---------------------------------------------------------------- inputs built by the workflow
TOY_CORPUS = RESULTS + "/toy/corpus"
TOY_LM = RESULTS + "/toy/lm/{model}"
TOY_SAE = RESULTS + "/toy/sae/{model}/L{layer}"
TOKENS = RESULTS + "/tokens.zarr"
TOKENIZER_TOKENS = RESULTS + "/tokens/{store}.zarr"  # a further tokenizer's token store (featsim.tokenstores)
ALIGNMENT = RESULTS + "/alignment/{store_a}/{store_b}/{mode}.zarr"  # aligned row pairs of two token stores

# ---------------------------------------------------------------- per (model, layer)
ACTS = RESULTS + "/acts/{model}/L{layer}.zarr"
CODES = RESULTS + "/codes/{model}/L{layer}.zarr"
DECODER = RESULTS + "/saes/{model}/L{layer}/decoder.npy"
SAE_META = RESULTS + "/saes/{model}/L{layer}/meta.json"
LABELS = RESULTS + "/labels/{model}/L{layer}.parquet"
MEMBERS = RESULTS + "/semantic/members/{model}/L{layer}/{concept}.parquet"
MEMBER_ACCURACY = RESULTS + "/semantic/accuracy/{model}/L{layer}.json"
CONCEPT_LABELS = RESULTS + "/concepts/labels/{model}/L{layer}.parquet"

# ---------------------------------------------------------------- per comparison cell
CORR = RESULTS + "/corr/{cmp}/" + CELL + ".zarr"
PAIRS = RESULTS + "/pairs/{cmp}/{pairing}/" + CELL + ".parquet"
SCORE = RESULTS + "/scores/{cmp}/{pairing}/{metric}/" + CELL + ".json"
CONCEPT_PAIRS = RESULTS + "/semantic/{cmp}/{concept}/{pairing}/" + CELL + ".pairs.parquet"
CONCEPT_SCORE = RESULTS + "/semantic/{cmp}/{concept}/{pairing}/{metric}/" + CELL + ".json"
BROWSER = RESULTS + "/browser/{cmp}/{pairing}/" + CELL + ".html"
STEERING_CONCEPT = RESULTS + "/steering/{cmp}/{concept}/" + CELL + ".json"
STEERING_AGREEMENT = RESULTS + "/steering/{cmp}/" + CELL + ".agreement.json"

# ---------------------------------------------------------------- tables (each with a .provenance.json beside it)
SUMMARY = RESULTS + "/summary/{cmp}/{pairing}.csv"
CONCEPT_SUMMARY = RESULTS + "/summary/{cmp}/semantic_{pairing}.csv"
OVERVIEW = RESULTS + "/summary/comparisons_{pairing}.csv"
EVIDENCE_TABLE = RESULTS + "/summary/{table}_{pairing}.csv"  # table: concept_agreement | contrasts
SHARED_CONCEPTS = RESULTS + "/summary/shared_concepts.csv"
STEERING_SUMMARY = RESULTS + "/summary/steering_{cmp}.csv"
STEERING_SPECIFICITY = RESULTS + "/summary/steering_{cmp}_specificity.csv"
STEERING_DOWNSTREAM = RESULTS + "/summary/steering_{cmp}_downstream.csv"  # later-layer responders (#14)

# ---------------------------------------------------------------- figures
FIGURES = RESULTS + "/figures"
CELL_FIGURES = FIGURES + "/{cmp}/{pairing}"
PAIRS_FIGURE = CELL_FIGURES + "/pairs_{figure}.png"  # figure: n | correlation | many_to_one
METRIC_FIGURE = CELL_FIGURES + "/{metric}_{figure}.png"  # figure: observed | z | null
CONCEPT_GRID_FIGURE = CELL_FIGURES + "/semantic_{metric}.png"
OVERVIEW_FIGURE = FIGURES + "/comparisons_{pairing}_{metric}.png"
OVERVIEW_PAIRS_FIGURE = FIGURES + "/comparisons_{pairing}_pairs.png"
CONCEPT_OVERVIEW_FIGURE = FIGURES + "/comparisons_semantic_{pairing}_{metric}.png"
STEERING_FIGURE = FIGURES + "/{cmp}/steering_{figure}.png"  # figure: effects | matrix | downstream

# ---------------------------------------------------------------- siblings: the same name, another suffix
NULL = ".null.npy"  # beside a score json: the null draws
DIAGNOSTICS = ".diagnostics.json"  # beside a pairs parquet: filter counts, mean correlations, histograms
PROVENANCE = ".provenance.json"  # beside a CSV table: its provenance and column descriptions
HTML = ".html"  # beside a CSV table: its rendering
SCATTER = ".scatter.png"  # beside a browser page


def sibling(path: str | os.PathLike, suffix: str) -> Path:
    """The file beside `path` with the same name up to its first dot and `suffix` after it."""
    path = Path(path)
    return path.with_name(path.name.split(".", 1)[0] + suffix)


def sibling_template(template: str, suffix: str) -> str:
    """`sibling` on a template (a wildcard never holds a dot, so the first dot of the name is the extension's)."""
    head, _, name = template.rpartition("/")
    return f"{head}/{name.split('.', 1)[0]}{suffix}"


def log(rule: str, job: str) -> str:
    """A rule's Snakemake log file: `logs/<rule>/<job>.log` (job: a template of the rule's wildcards)."""
    return f"{RESULTS}/logs/{rule}/{job}.log"


class _KeepMissing(dict):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def fill(template: str, **values) -> str:
    """`template` with the given wildcards set; wildcards not given stay as `{name}`."""
    return string.Formatter().vformat(template, (), _KeepMissing(values))


def wildcards(template: str) -> set[str]:
    """The wildcard names a template still holds."""
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def experiment_dir(exp: str) -> Path:
    """An experiment's directory (relative to the working directory, as the rules see it)."""
    return Path(fill(RESULTS, exp=exp))


def in_experiment(exp_dir: str | os.PathLike, template: str, **values) -> Path:
    """The file of `template` under an explicit experiment directory (every wildcard but exp given)."""
    relative = fill(template, **values).removeprefix(RESULTS + "/")
    left = wildcards(relative)
    if left:
        raise ValueError(f"{template}: wildcards {sorted(left)} not given")
    return Path(exp_dir) / relative


def cell_name(layer_a: int, layer_b: int) -> str:
    """The label of a layer cell in tables and figures."""
    return fill(CELL, la=int(layer_a), lb=int(layer_b))


def cell_layers(name: str) -> tuple[int, int]:
    """(layer_a, layer_b) of a cell label made by `cell_name` (for ordering table rows, never file names)."""
    match = _CELL_LABEL.match(name)
    if match is None:
        raise ValueError(f"{name!r} is not a cell label like {cell_name(0, 1)}")
    return int(match["la"]), int(match["lb"])
