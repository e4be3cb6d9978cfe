"""The steering stage of one comparison: concept vectors of A, steered in A and carried to B, with their nulls.

One call (`steer_comparison`) does every concept and layer cell of a comparison, so each model is loaded
once and every set of steering vectors (concepts, random directions, random pairings) goes through the
model as one batch. Outputs: a json per (concept, cell) with the alpha curve, nulls and p-values; a json
per cell with the concept x concept agreement matrices and their diagonal-dominance tests; and the rows
of the summary table (`summary_table`), Holm-adjusted across concepts and cells.

Alphas are multiples of the hook's typical activation norm (the mean L2 norm of the unsteered activation
at the steered positions of the prompts), so one grid means the same relative push in both models. Nulls
are drawn at `steering.test_alpha` only (the self-steering null, one shared batch of random directions per
layer, at every alpha: it is cheap); a steered run whose mean KL exceeds `steering.max_kl` is reported as
broken and not tested.
"""

from __future__ import annotations

import json
import logging
import math
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from featsim.errors import ConfigError
from featsim.steering import Effects, Steerer, agreement_matrix, heldout_prompts, keyword_token_ids
from featsim.steering_config import SteeringConfig
from featsim.steering_transfer import (TransferCell, concept_latents, dominance_test, mean_direction, null_summary,
                                       permutation_p, random_directions)

log = logging.getLogger(__name__)

SUMMARY_COLUMNS = ("concept", "layer_a", "layer_b", "method", "alpha", "self_kl", "self_p", "keyword_mass_self",
                   "transfer_agreement", "transfer_p", "transfer_p_holm", "keyword_mass_transfer", "kl_transfer")
"""The contract of `summary/steering_{cmp}.csv` (issue #14); the extra columns below follow them."""
EXTRA_COLUMNS = ("status", "alpha_a", "alpha_b", "transfer_p_holm_min", "self_p_holm", "keyword_mass_self_p", "n_latents_a", "n_latents_b",
                 "transfer_null_mean", "transfer_null_q95", "self_kl_null_q95")
SPECIFICITY_COLUMNS = ("layer_a", "layer_b", "method", "alpha", "n_concepts", "diagonal_mean", "off_diagonal_mean",
                       "dominance", "dominance_p", "min_p", "concepts")

TESTED, CURVE, BROKEN_A, BROKEN_B = "tested", "curve", "broken_a", "broken_b"
UNDERPOWERED = "underpowered"  # tested, but its Holm family cannot reach alpha (too few null draws)
NO_LATENTS, NO_PARTNERS, NO_MAP = "no_concept_latents", "no_paired_latents", "too_few_pairs_for_map"


@dataclass(frozen=True)
class SteeringSide:
    """One side of a comparison: the model entry and how to load its LM."""

    model: str
    lm_owner: str
    lm: dict  # models.<lm_owner>.lm
    dtype: str = "float32"


@dataclass(frozen=True)
class SteeringCell:
    """One layer cell: its inputs (decoders, SAE metadata, pairs, A's concept tables) and output paths."""

    layer_a: int
    layer_b: int
    decoder_a: str
    decoder_b: str
    meta_a: str
    meta_b: str
    pairs: str
    members: dict  # concept -> A's concept-latent table at layer_a
    outputs: dict  # concept -> json path
    agreement: str  # json path of the concept x concept matrices


@dataclass
class _Layer:
    """One model steered at one layer: the hook, its steerer and what was measured there."""

    steerer: Steerer
    hook: str
    alphas: dict = field(default_factory=dict)  # grid multiple -> absolute alpha


def _load_lm(side: SteeringSide, meta: dict, exp_dir: Path, device: str):
    from featsim.lm import LMSpec, load_lm, processing_kwargs

    spec = LMSpec.from_config(side.lm_owner, side.lm, dtype=side.dtype, device=device)
    kwargs = (meta.get("sae_metadata") or {}).get("model_from_pretrained_kwargs")
    return load_lm(spec, exp_dir, processing_kwargs(kwargs, f"models.{side.model}.sae"))


def _seed(*parts) -> list[int]:
    """A seed sequence from ints and strings (strings by crc32: stable across runs and machines)."""
    return [p if isinstance(p, int) else zlib.crc32(str(p).encode()) for p in parts]


def _prompts(tokens_path, split_config: dict, cfg: SteeringConfig) -> np.ndarray:
    from featsim.split import heldout_sequences
    from featsim.stores import open_tokens

    tokens = open_tokens(tokens_path)
    fraction = float(split_config["heldout_fraction"])
    heldout = (heldout_sequences(tokens.n_sequences, fraction, int(split_config["seed"])) if fraction > 0
               else np.ones(tokens.n_sequences, dtype=bool))
    return heldout_prompts(tokens.tokens[:], tokens.mask[:], heldout, cfg.prompts, cfg.prompt_length, cfg.seed)


def _side_result(effects: Effects, index: int, concepts: list[str], concept: str) -> dict:
    return {"kl": float(effects.kl[index]), "keyword_mass": float(effects.keyword_mass[index, concepts.index(concept)])}


def steer_comparison(cells: list[SteeringCell], concept_files: dict, side_a: SteeringSide, side_b: SteeringSide,
                     tokens_path, split_config: dict, cfg: SteeringConfig, exp_dir, identity: dict,
                     provenance_slice: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Steer every concept of every cell; write the per-concept and per-cell jsons; return the summary and
    specificity tables (`summary_table`, `specificity_table` rows before multiple-testing correction)."""
    import torch

    from featsim.concepts import load_concept
    from featsim.lm import resolve_device
    from featsim.provenance import make_provenance, write_json

    started = time.perf_counter()
    concepts = sorted(concept_files)
    device = resolve_device(cfg.device)
    exp_dir = Path(exp_dir)
    prompts = _prompts(tokens_path, split_config, cfg)
    metas = {(cell.layer_a, cell.layer_b): (json.loads(Path(cell.meta_a).read_text()),
                                            json.loads(Path(cell.meta_b).read_text())) for cell in cells}
    first_meta_a, first_meta_b = metas[(cells[0].layer_a, cells[0].layer_b)]
    model_a = _load_lm(side_a, first_meta_a, exp_dir, device)
    model_b = model_a if side_b.lm_owner == side_a.lm_owner else _load_lm(side_b, first_meta_b, exp_dir, device)
    if model_a.cfg.d_vocab != model_b.cfg.d_vocab:
        raise ConfigError("steering.comparisons", f"{side_a.model} and {side_b.model} have different vocabularies "
                                                  f"({model_a.cfg.d_vocab} vs {model_b.cfg.d_vocab}); featsim "
                                                  "compares models that share one tokenizer")
    concept_objects = {c: load_concept(concept_files[c]) for c in concepts}
    keyword_sets = [keyword_token_ids(model_a.tokenizer, concept_objects[c]) for c in concepts]
    torch.manual_seed(cfg.seed)

    layers_a: dict[int, _Layer] = {}
    layers_b: dict[int, _Layer] = {}

    def layer(models: dict, model, meta: dict, number: int) -> _Layer:
        if number not in models:
            steerer = Steerer(model, meta["hook"], prompts, cfg.positions, cfg.batch_size)
            models[number] = _Layer(steerer, meta["hook"],
                                    {a: a * steerer.activation_norm for a in cfg.alphas})
        return models[number]

    # A: concept vectors and the shared random-direction null, per A layer and alpha
    self_results: dict[int, dict] = {}
    for cell in cells:
        meta_a, _ = metas[(cell.layer_a, cell.layer_b)]
        la = cell.layer_a
        if la in self_results:
            continue
        site = layer(layers_a, model_a, meta_a, la)
        decoder_a = np.load(cell.decoder_a)
        latents = {c: concept_latents(cell.members[c]) for c in concepts}
        vectors = {c: mean_direction(decoder_a, latents[c]) for c in concepts if latents[c].size}
        order = [c for c in concepts if c in vectors]
        per_alpha = {}
        for index, alpha in enumerate(cfg.alphas):
            absolute = site.alphas[alpha]
            observed = (site.steerer.effects(np.stack([vectors[c] for c in order]), absolute, keyword_sets,
                                             keep_signatures=True) if order else None)
            null = site.steerer.effects(random_directions(cfg.null_draws, decoder_a.shape[1],
                                                          np.random.default_rng(_seed(cfg.seed, "self", la, index))),
                                        absolute, keyword_sets)
            per_alpha[alpha] = (observed, null)
        self_results[la] = {"latents": latents, "vectors": vectors, "order": order, "per_alpha": per_alpha,
                            "decoder": decoder_a}
        log.info("A layer %d (%s): %d concepts with latents, activation norm %.3f", la, site.hook, len(order),
                 site.steerer.activation_norm)

    summary_rows, specificity_rows = [], []
    for cell in cells:
        la, lb = cell.layer_a, cell.layer_b
        _, meta_b = metas[(la, lb)]
        site_a = layers_a[la]
        site_b = layer(layers_b, model_b, meta_b, lb)
        own = self_results[la]
        transfer = TransferCell.from_pairs(own["decoder"], np.load(cell.decoder_b), pd.read_parquet(cell.pairs))
        records = {c: {"concept": c, "layer_a": la, "layer_b": lb, "hook_a": site_a.hook, "hook_b": site_b.hook,
                       "n_latents_a": int(own["latents"][c].size), "latents_a": own["latents"][c].tolist(),
                       "latents_b": transfer.partners(own["latents"][c]).tolist(),
                       "n_keyword_tokens": int(keyword_sets[concepts.index(c)].size), "alphas": []}
                   for c in concepts}
        matrices = []
        for index, alpha in enumerate(cfg.alphas):
            observed_a, null_a = own["per_alpha"][alpha]
            alpha_a, alpha_b = site_a.alphas[alpha], site_b.alphas[alpha]
            is_test = alpha == cfg.test_alpha
            signatures_b: dict[str, dict] = {}
            for c in concepts:
                entry = {"alpha": alpha, "alpha_a": alpha_a, "alpha_b": alpha_b, "transfer": {}}
                records[c]["alphas"].append(entry)
                latents = own["latents"][c]
                if not latents.size:
                    entry["status"] = NO_LATENTS
                    continue
                position = own["order"].index(c)
                self_kl = float(observed_a.kl[position])
                keyword_null = null_a.keyword_mass[:, concepts.index(c)]
                entry["self"] = {**_side_result(observed_a, position, concepts, c),
                                 "p": permutation_p(self_kl, null_a.kl), "null_kl": null_summary(null_a.kl),
                                 "keyword_mass_p": permutation_p(float(observed_a.keyword_mass[position,
                                                                                               concepts.index(c)]),
                                                                 keyword_null),
                                 "null_keyword_mass": null_summary(keyword_null),
                                 "broken": bool(self_kl > cfg.max_kl)}
                entry["status"] = BROKEN_A if entry["self"]["broken"] else (TESTED if is_test else CURVE)
                reference = observed_a.signatures[position]
                for method in cfg.transfer:
                    entry["transfer"][method] = _transfer(method, transfer, site_b, own["vectors"][c], latents,
                                                          reference, alpha_b, keyword_sets, concepts, c, cfg,
                                                          test=is_test and not entry["self"]["broken"],
                                                          rng=np.random.default_rng(_seed(cfg.seed, "transfer", la,
                                                                                          lb, c, method)),
                                                          keep=signatures_b.setdefault(method, {}))
            matrices += _specificity(own, observed_a, signatures_b, records, index, alpha, cfg, la, lb)
        provenance = make_provenance(provenance_slice, kind="steering", **identity, layer_a=la, layer_b=lb,
                                     prompts=int(prompts.shape[0]), prompt_length=int(prompts.shape[1]),
                                     vocabulary="the experiment's shared tokenizer (all d_vocab tokens)",
                                     split=dict(split_config))
        for c in concepts:
            record = {**records[c], "activation_norm_a": site_a.steerer.activation_norm,
                      "activation_norm_b": site_b.steerer.activation_norm, "max_kl": cfg.max_kl,
                      "test_alpha": cfg.test_alpha, "positions": cfg.positions, "provenance": provenance}
            write_json(cell.outputs[c], record)
            summary_rows += _summary_rows(record, cfg)
        write_json(cell.agreement, {"layer_a": la, "layer_b": lb, "concepts": concepts, "matrices": matrices,
                                    "provenance": provenance})
        specificity_rows += [{key: m[key] for key in SPECIFICITY_COLUMNS} for m in matrices]
        log.info("cell A%d_B%d done (%.1f s so far)", la, lb, time.perf_counter() - started)
    return (summary_table(summary_rows, cfg.null_draws),
            pd.DataFrame(specificity_rows, columns=list(SPECIFICITY_COLUMNS)))


def _transfer(method: str, transfer: TransferCell, site_b: _Layer, vector_a: np.ndarray, latents: np.ndarray,
              reference: np.ndarray, alpha_b: float, keyword_sets, concepts: list[str], concept: str,
              cfg: SteeringConfig, test: bool, rng: np.random.Generator, keep: dict) -> dict:
    """One concept carried to B by one method at one alpha: observed effect, and its null when tested."""
    n_partners = transfer.partners(latents).size
    if n_partners == 0:
        return {"status": NO_PARTNERS}
    try:
        vector_b = (transfer.pairing_transfer(latents) if method == "pairing"
                    else transfer.procrustes_transfer(vector_a, latents))
    except ValueError as exc:  # too few pairs outside the concept to fit a map
        return {"status": NO_MAP, "reason": str(exc)}
    observed = site_b.steerer.effects(vector_b[None], alpha_b, keyword_sets, reference=reference, keep_signatures=True)
    keep[concept] = observed.signatures[0]
    result = {"n_latents_b": int(n_partners), **_side_result(observed, 0, concepts, concept),
              "agreement": float(observed.agreement[0]), "broken": bool(observed.kl[0] > cfg.max_kl),
              "map": "orthogonal Procrustes on unit decoder rows of every pair but the concept's own"
              if method == "procrustes" else "mean of paired B decoder rows"}
    if result["broken"]:
        return {**result, "status": BROKEN_B}
    if not test:
        return {**result, "status": CURVE}
    null_vectors = (transfer.pairing_null(n_partners, cfg.null_draws, rng) if method == "pairing"
                    else transfer.procrustes_null(vector_a, latents, cfg.null_draws, rng))
    null = site_b.steerer.effects(null_vectors, alpha_b, reference=reference)
    return {**result, "status": TESTED, "p": permutation_p(result["agreement"], null.agreement),
            "null_agreement": null_summary(null.agreement),
            "null": "random pairings of the same size" if method == "pairing"
            else "maps fitted on the same pairs with the B side shuffled"}


def _specificity(own: dict, observed_a: Effects | None, signatures_b: dict, records: dict, alpha_index: int,
                 alpha: float, cfg: SteeringConfig, la: int, lb: int) -> list[dict]:
    """Per method: agreement of B steered with concept i's transferred vector with A's effect of concept j,
    over the concepts steered unbroken on both sides, and its diagonal-dominance test."""
    out = []
    for method, by_concept in signatures_b.items():
        included = [c for c in own["order"] if c in by_concept
                    and records[c]["alphas"][alpha_index]["status"] != BROKEN_A
                    and records[c]["alphas"][alpha_index]["transfer"][method].get("status") != BROKEN_B]
        row = {"layer_a": la, "layer_b": lb, "method": method, "alpha": alpha, "n_concepts": len(included),
               "concepts": ";".join(included), "diagonal_mean": math.nan, "off_diagonal_mean": math.nan,
               "dominance": math.nan, "dominance_p": math.nan, "min_p": math.nan, "matrix": None}
        if len(included) >= 2:
            rows = np.stack([by_concept[c] for c in included])
            cols = np.stack([observed_a.signatures[own["order"].index(c)] for c in included])
            matrix = agreement_matrix(rows, cols)
            n = len(included)
            test = dominance_test(matrix, cfg.agreement_permutations, cfg.seed)
            row.update(matrix=matrix.tolist(), diagonal_mean=float(np.trace(matrix) / n),
                       off_diagonal_mean=float((matrix.sum() - np.trace(matrix)) / (n * (n - 1))),
                       dominance=test.statistic, dominance_p=test.p_value, min_p=test.min_p,
                       null_mean=test.null_mean, null_sd=test.null_sd)
        out.append(row)
    return out


def _summary_rows(record: dict, cfg: SteeringConfig) -> list[dict]:
    rows = []
    for entry in record["alphas"]:
        own = entry.get("self", {})
        for method in cfg.transfer:
            moved = entry["transfer"].get(method, {})
            status = entry["status"]
            if status in (TESTED, CURVE) and moved.get("status") not in (TESTED, CURVE):
                status = moved.get("status", status)
            rows.append({
                "concept": record["concept"], "layer_a": record["layer_a"], "layer_b": record["layer_b"],
                "method": method, "alpha": entry["alpha"],
                "self_kl": own.get("kl", math.nan), "self_p": math.nan if own.get("broken", True) else own["p"],
                "keyword_mass_self": own.get("keyword_mass", math.nan),
                "transfer_agreement": moved.get("agreement", math.nan), "transfer_p": moved.get("p", math.nan),
                "keyword_mass_transfer": moved.get("keyword_mass", math.nan),
                "kl_transfer": moved.get("kl", math.nan), "status": status, "alpha_a": entry["alpha_a"],
                "alpha_b": entry["alpha_b"],
                "keyword_mass_self_p": math.nan if own.get("broken", True) else own["keyword_mass_p"],
                "n_latents_a": record["n_latents_a"], "n_latents_b": moved.get("n_latents_b", 0),
                "transfer_null_mean": moved.get("null_agreement", {}).get("mean", math.nan),
                "transfer_null_q95": moved.get("null_agreement", {}).get("q95", math.nan),
                "self_kl_null_q95": own.get("null_kl", {}).get("q95", math.nan)})
    return rows


def summary_table(rows: list[dict], null_draws: int, alpha: float | None = None) -> pd.DataFrame:
    """The summary rows with Holm adjustment: transfer p across concepts and cells per method (the tested
    alpha); self p across concepts and A layers per alpha (each (concept, A layer) counted once).
    `transfer_p_holm_min` is the smallest Holm p the family can reach, n_tests / (null_draws + 1): a tested
    row whose floor is not below `alpha` (significance level, default featsim's) gets status
    `underpowered`: it cannot be significant after Holm (raise steering.null_draws)."""
    from featsim.multiple_testing import DEFAULT_ALPHA, adjust_pvalues

    alpha = DEFAULT_ALPHA if alpha is None else alpha

    table = pd.DataFrame(rows, columns=[c for c in SUMMARY_COLUMNS + EXTRA_COLUMNS if c not in
                                        ("transfer_p_holm", "transfer_p_holm_min", "self_p_holm")])
    table["transfer_p_holm"] = np.nan
    table["transfer_p_holm_min"] = np.nan
    for _, index in table.groupby(["method", "alpha"]).groups.items():
        p_values = table.loc[index, "transfer_p"].to_numpy()
        table.loc[index, "transfer_p_holm"] = adjust_pvalues(p_values, "holm")
        n_tests = int(np.isfinite(p_values).sum())
        if n_tests:
            table.loc[index, "transfer_p_holm_min"] = min(1.0, n_tests / (null_draws + 1))
    weak = (table["status"] == TESTED) & (table["transfer_p_holm_min"] >= alpha)
    table.loc[weak, "status"] = UNDERPOWERED
    table["self_p_holm"] = np.nan
    for _, group in table.groupby("alpha"):
        unique = group.drop_duplicates(["concept", "layer_a"])
        adjusted = dict(zip(zip(unique["concept"], unique["layer_a"]),
                            adjust_pvalues(unique["self_p"].to_numpy(), "holm")))
        table.loc[group.index, "self_p_holm"] = [adjusted[key] for key in zip(group["concept"], group["layer_a"])]
    table = table[list(SUMMARY_COLUMNS + EXTRA_COLUMNS)]
    return table.sort_values(["method", "alpha", "concept", "layer_a", "layer_b"], kind="stable").reset_index(drop=True)


def specificity_table(table: pd.DataFrame) -> pd.DataFrame:
    """The diagonal-dominance rows with Holm across cells per (method, alpha), as `dominance_p_holm`."""
    from featsim.multiple_testing import adjust_pvalues

    table = table.copy()
    table["dominance_p_holm"] = np.nan
    for _, index in table.groupby(["method", "alpha"]).groups.items():
        table.loc[index, "dominance_p_holm"] = adjust_pvalues(table.loc[index, "dominance_p"].to_numpy(), "holm")
    return table.sort_values(["method", "alpha", "layer_a", "layer_b"], kind="stable").reset_index(drop=True)


COLUMN_DOCS = {
    "concept": "concept id (file stem)",
    "layer_a": "layer of model A steered", "layer_b": "layer of model B steered with the transferred vector",
    "method": "pairing: mean of the paired B latents' decoder rows; procrustes: orthogonal map fitted on every "
              "pair but the concept's own",
    "alpha": "steering strength as a multiple of the hook's typical activation norm",
    "self_kl": "mean KL(clean || steered) of A's next-token distribution, nats",
    "self_p": "p of self_kl against random directions of the same norm, (b+1)/(m+1); empty when broken",
    "keyword_mass_self": "mean change of log P(concept keyword tokens) in A",
    "transfer_agreement": "mean over prompts of the correlation of B's and A's effect signatures over the vocabulary",
    "transfer_p": "p of transfer_agreement against random pairings of the same size (only at steering.test_alpha)",
    "transfer_p_holm": "Holm across concepts and cells (per method)",
    "keyword_mass_transfer": "mean change of log P(concept keyword tokens) in B",
    "kl_transfer": "mean KL(clean || steered) of B's next-token distribution, nats",
    "status": "tested | underpowered (tested, but transfer_p_holm_min >= alpha: cannot be significant after Holm) | "
              "curve (not the test alpha) | broken_a / broken_b (KL above steering.max_kl) | "
              "no_concept_latents | no_paired_latents | too_few_pairs_for_map",
    "alpha_a": "absolute alpha in A", "alpha_b": "absolute alpha in B",
    "transfer_p_holm_min": "smallest transfer_p_holm the family can reach: n_tests / (null_draws + 1)",
    "self_p_holm": "Holm across concepts and A layers (per alpha)",
    "keyword_mass_self_p": "p of keyword_mass_self against the random directions",
    "n_latents_a": "concept latents of A averaged into the vector", "n_latents_b": "B latents paired with them",
    "transfer_null_mean": "mean agreement of the null transfers", "transfer_null_q95": "its 95% quantile",
    "self_kl_null_q95": "95% quantile of the random-direction KL",
}


def write_table(path, table: pd.DataFrame, config_slice: dict, **ids) -> None:
    """CSV written atomically; provenance and column descriptions in `<name>.provenance.json` beside it."""
    from featsim.provenance import atomic_path, make_provenance, write_json

    path = Path(path)
    record = make_provenance(config_slice, **ids)
    record["n_rows"] = int(len(table))
    record["columns"] = {c: COLUMN_DOCS[c] for c in table.columns if c in COLUMN_DOCS}
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)
    write_json(path.with_name(path.stem + ".provenance.json"), record)


def run_steering(cells: list[SteeringCell], concept_files: dict, side_a: SteeringSide, side_b: SteeringSide,
                 tokens_path, split_config: dict, steering_config: dict, exp_dir, identity: dict, summary_path,
                 specificity_path, effects_figure_path, matrix_figure_path, threads: int = 1) -> pd.DataFrame:
    """The `steering_<cmp>` rule: every json, both tables and both figures of one comparison."""
    import torch
    from threadpoolctl import threadpool_limits

    from featsim.figures import save_figure
    from featsim.steering_figures import effects_figure, matrix_figure

    cfg = SteeringConfig.from_config(steering_config)
    started = time.perf_counter()
    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, int(threads)))
    try:
        with threadpool_limits(limits=max(1, int(threads)), user_api="blas"):
            summary, specificity = steer_comparison(cells, concept_files, side_a, side_b, tokens_path, split_config,
                                                    cfg, exp_dir, identity, steering_config)
    finally:
        torch.set_num_threads(previous)
    specificity = specificity_table(specificity)
    ids = {**identity, "kind": "steering_summary", "seconds": round(time.perf_counter() - started, 1)}
    write_table(summary_path, summary, steering_config, **ids)
    write_table(specificity_path, specificity, steering_config, **{**ids, "kind": "steering_specificity"})
    save_figure(effects_figure(summary, cfg.test_alpha, identity.get("comparison", "")), effects_figure_path)
    agreements = [json.loads(Path(cell.agreement).read_text()) for cell in cells]
    save_figure(matrix_figure(agreements, cfg.test_alpha, identity.get("comparison", "")), matrix_figure_path)
    log.info("steering %s: %d cells, %d concepts in %.1f s", identity.get("comparison"), len(cells),
             len(concept_files), time.perf_counter() - started)
    return summary
