"""The steering stage of one comparison: concept vectors of A, steered in A and carried to B, with their nulls.

One call (`steer_comparison`) does every concept and layer cell of a comparison, so each model is loaded
once and every set of steering vectors (concepts, random directions, random pairings) goes through the
model as one batch. It returns (`SteeringResult`) a record per (concept, cell) with the alpha curve, nulls
and p-values; a record per cell with the concept x concept agreement matrices and their diagonal-dominance
tests; and the rows of the summary table (`summary_table`), Holm-adjusted across concepts and cells.
`featsim.targets.steering` writes them.

Alphas are multiples of the hook's typical activation norm (the mean L2 norm of the unsteered activation
at the steered positions of the prompts), so one grid means the same relative push in both models. Nulls
are drawn at `steering.test_alpha` only (the self-steering null, one shared batch of random directions per
layer, at every alpha: it is cheap); a steered run whose mean KL exceeds `steering.max_kl` is reported as
broken and not tested.

Random pairings depend on the concept only through its number of B partners, so concepts with as many
partners share one batch of random-pairing transfers per cell (each compared with its own A effect): the
same null per concept at a fraction of the forward passes; Holm is valid under this dependence. At the
test alpha the later cells' SAEs are read out in the same passes (featsim.steering_downstream).
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
import torch

from featsim.concept_labels import concept_of
from featsim.concepts import load_concept
from featsim.errors import ConfigError
from featsim.lm import LMSpec, load_lm, processing_kwargs, resolve_device
from featsim.multiple_testing import DEFAULT_ALPHA, adjust_pvalues
from featsim.saes import SAESpec, encode, load_sae
from featsim.split import heldout_sequences
from featsim.steering import (WHITENING_RIDGE, Effects, Steerer, Whitener, agreement_matrix, heldout_prompts,
                              keyword_token_ids)
from featsim.steering_config import SteeringConfig
from featsim.steering_downstream import LaterLayers, downstream_effect
from featsim.steering_transfer import (NoDirectionError, TransferCell, concept_latents, dominance_test, mean_direction,
                                       null_summary, permutation_p, random_directions)
from featsim.stores import open_tokens

log = logging.getLogger(__name__)

SUMMARY_COLUMNS = ("concept", "layer_a", "layer_b", "method", "alpha", "self_kl", "self_p", "keyword_mass_self",
                   "transfer_agreement", "transfer_p", "transfer_p_holm", "keyword_mass_transfer", "kl_transfer")
"""The contract of `summary/steering_{cmp}.csv` (issue #14); the extra columns below follow them."""
EXTRA_COLUMNS = ("status", "alpha_a", "alpha_b", "transfer_p_holm_min", "self_p_holm", "keyword_mass_self_p",
                 "n_latents_a", "n_latents_b",
                 "transfer_null_mean", "transfer_null_q95", "self_kl_null_q95", "transfer_agreement_specific",
                 "transfer_p_specific", "transfer_p_specific_holm", "transfer_specific_null_mean",
                 "transfer_specific_null_q95")
SPECIFICITY_COLUMNS = ("layer_a", "layer_b", "method", "alpha", "n_concepts", "diagonal_mean", "off_diagonal_mean",
                       "dominance", "dominance_p", "min_p", "concepts", "dominance_specific", "dominance_p_specific")

TESTED, CURVE, BROKEN_A, BROKEN_B = "tested", "curve", "broken_a", "broken_b"
WHITENING_DRAWS = 128
"""Random directions per side (A: the first of its self-steering null; B: an extra batch per B layer) whose
signatures at the test alpha whiten the specific agreement (featsim.steering.Whitener)."""
UNDERPOWERED = "underpowered"  # tested, but its Holm family cannot reach alpha (too few null draws)
NO_LATENTS, NO_PARTNERS, NO_MAP = "no_concept_latents", "no_paired_latents", "too_few_pairs_for_map"


@dataclass(frozen=True)
class SteeringSide:
    """One side of a comparison: the model entry and how to load its LM."""

    model: str
    lm_owner: str
    lm: dict  # models.<lm_owner>.lm
    dtype: str = "float32"
    sae: dict | None = None  # models.<model>.sae: loads the later layers' SAEs (downstream effects)


@dataclass(frozen=True)
class LaterCell:
    """A cell of the comparison after a steered one, read out for downstream effects: its SAE metadata (hook,
    activation), both sides' concept labels and its pairs."""

    layer_a: int
    layer_b: int
    meta_a: str
    meta_b: str
    labels_a: str
    labels_b: str
    pairs: str


@dataclass(frozen=True)
class SteeringCell:
    """One layer cell: its inputs (decoders, SAE metadata, pairs, A's concept labels)."""

    layer_a: int
    layer_b: int
    decoder_a: str
    decoder_b: str
    meta_a: str
    meta_b: str
    pairs: str
    labels_a: str  # A's concept labels at layer_a (featsim.concept_labels)
    later: tuple = ()  # LaterCell: cells after this one whose SAEs are read out while steering it


def cells_after(layer_a: int, layer_b: int, later: list[LaterCell]) -> tuple[LaterCell, ...]:
    """The cells strictly after (layer_a, layer_b) on both sides: read out while that cell is steered."""
    return tuple(cell for cell in later if cell.layer_a > layer_a and cell.layer_b > layer_b)


@dataclass
class _Layer:
    """One model steered at one layer: the hook, its steerer and what was measured there."""

    steerer: Steerer
    hook: str
    alphas: dict = field(default_factory=dict)  # grid multiple -> absolute alpha


def _load_lm(side: SteeringSide, meta: dict, exp_dir: Path, device: str):
    spec = LMSpec.from_config(side.lm_owner, side.lm, dtype=side.dtype, device=device)
    kwargs = (meta.get("sae_metadata") or {}).get("model_from_pretrained_kwargs")
    return load_lm(spec, exp_dir, processing_kwargs(kwargs, f"models.{side.model}.sae"))


def _encoder(side: SteeringSide, layer: int, activation: str, exp_dir: Path, device: str):
    """The SAE of `side` at `layer` as a function activations [N, d] -> the values its codes stage writes."""
    if side.sae is None:
        raise ConfigError(f"models.{side.model}.sae", "downstream effects need the SAE config of this model")
    lm = (LMSpec.from_config(side.lm_owner, side.lm, dtype=side.dtype, device=device)
          if side.sae.get("source") == "neurons" else None)
    sae, _ = load_sae(SAESpec.from_config(side.model, side.sae, lm=lm), layer, exp_dir, device)

    def codes(x):
        with torch.no_grad():
            return encode(sae, x.float(), activation)[0]

    return codes


class _SharedPairingNull:
    """Random-pairing transfers of one cell, steered once per partner count and compared with every
    concept's A effect (`references` [R, P, V]); the draws of a count are seeded by (cell, count) alone."""

    def __init__(self, transfer: TransferCell, site_b: "_Layer", alpha_b: float, references: np.ndarray,
                 cfg: SteeringConfig, cell: tuple[int, int], responses: bool, whitening: tuple | None = None):
        self.transfer, self.site_b, self.alpha_b, self.references = transfer, site_b, alpha_b, references
        self.whitening = whitening
        self.cfg, self.cell, self.responses = cfg, cell, responses
        self.by_size: dict[int, Effects] = {}

    def __call__(self, size: int) -> Effects:
        if size not in self.by_size:
            rng = np.random.default_rng(_seed(self.cfg.seed, "pairing-null", *self.cell, size))
            vectors = self.transfer.pairing_null(size, self.cfg.null_draws, rng)
            self.by_size[size] = self.site_b.steerer.effects(vectors, self.alpha_b, reference=self.references,
                                                             responses=self.responses,
                                                             whitening=self.whitening)
        return self.by_size[size]


def _self_null(steerer: Steerer, directions: np.ndarray, alpha: float, keyword_sets: list,
               whiten: bool) -> tuple[Effects, Whitener | None]:
    """The random-direction null of self-steering; with `whiten`, also the whitener built from the signatures of
    its first WHITENING_DRAWS directions (kept only for those, so memory stays bounded by the vocabulary)."""
    if not whiten:
        return steerer.effects(directions, alpha, keyword_sets), None
    head = steerer.effects(directions[:WHITENING_DRAWS], alpha, keyword_sets, keep_signatures=True)
    if len(directions) <= WHITENING_DRAWS:
        return Effects(kl=head.kl, keyword_mass=head.keyword_mass), Whitener(head.signatures)
    tail = steerer.effects(directions[WHITENING_DRAWS:], alpha, keyword_sets)
    return (Effects(kl=np.concatenate([head.kl, tail.kl]),
                    keyword_mass=np.concatenate([head.keyword_mass, tail.keyword_mass])), Whitener(head.signatures))


def _later_layers(later: LaterCell, hooks: dict) -> LaterLayers:
    pairs = pd.read_parquet(later.pairs, columns=["a", "b"])
    return LaterLayers(later.layer_a, later.layer_b, hooks[("a", later.layer_a)], hooks[("b", later.layer_b)],
                       pairs["a"].to_numpy(np.int64), pairs["b"].to_numpy(np.int64),
                       concept_of(pd.read_parquet(later.labels_a)), concept_of(pd.read_parquet(later.labels_b)))


def _seed(*parts) -> list[int]:
    """A seed sequence from ints and strings (strings by crc32: stable across runs and machines)."""
    return [p if isinstance(p, int) else zlib.crc32(str(p).encode()) for p in parts]


def _prompts(tokens_path, split_config: dict, cfg: SteeringConfig) -> np.ndarray:
    tokens = open_tokens(tokens_path)
    fraction = float(split_config["heldout_fraction"])
    heldout = (heldout_sequences(tokens.n_sequences, fraction, int(split_config["seed"])) if fraction > 0
               else np.ones(tokens.n_sequences, dtype=bool))
    return heldout_prompts(tokens.tokens[:], tokens.mask[:], heldout, cfg.prompts, cfg.prompt_length, cfg.seed)


def _side_result(effects: Effects, index: int, concepts: list[str], concept: str) -> dict:
    return {"kl": float(effects.kl[index]), "keyword_mass": float(effects.keyword_mass[index, concepts.index(concept)])}


@dataclass(frozen=True)
class SteeringDocument:
    """One json a steering job writes, before provenance: a concept's record, or (concept None) a cell's
    agreement matrices."""

    layer_a: int
    layer_b: int
    concept: str | None
    record: dict


@dataclass(frozen=True)
class SteeringResult:
    """Everything one comparison's steering computes: the tables (specificity before multiple-testing
    correction), the jsons to write, and the prompts' shape (rows, length) for their provenance."""

    summary: pd.DataFrame
    specificity: pd.DataFrame
    downstream: pd.DataFrame
    documents: list[SteeringDocument]
    prompt_shape: tuple[int, int]


def steer_comparison(cells: list[SteeringCell], concept_files: dict, side_a: SteeringSide, side_b: SteeringSide,
                     tokens_path, split_config: dict, cfg: SteeringConfig, exp_dir,
                     significance: float | None = None) -> SteeringResult:
    """Steer every concept of every cell: the summary, specificity and downstream tables, and each concept's
    and cell's json record. `significance`: the config's `alpha` (default featsim's), the level that marks a
    Holm family underpowered."""
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
    later_hooks, readouts = {}, {"a": {}, "b": {}}  # (side, later layer) -> hook; side -> steered layer -> encoders
    encoders_by_layer: dict = {}  # (side, later layer) -> encoder: each SAE loaded once
    for cell in cells:
        for later in cell.later:
            sides = (("a", side_a, later.layer_a, later.meta_a, cell.layer_a),
                     ("b", side_b, later.layer_b, later.meta_b, cell.layer_b))
            for side_name, side, number, meta_path, steered in sides:
                meta = json.loads(Path(meta_path).read_text())
                later_hooks[(side_name, number)] = meta["hook"]
                if (side_name, number) not in encoders_by_layer:
                    encoders_by_layer[(side_name, number)] = _encoder(side, number, meta["activation"], exp_dir, device)
                readouts[side_name].setdefault(steered, {})[meta["hook"]] = encoders_by_layer[(side_name, number)]

    def layer(models: dict, model, meta: dict, number: int, side_name: str) -> _Layer:
        if number not in models:
            steerer = Steerer(model, meta["hook"], prompts, cfg.positions, cfg.batch_size,
                              readouts=readouts[side_name].get(number))
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
        site = layer(layers_a, model_a, meta_a, la, "a")
        decoder_a = np.load(cell.decoder_a)
        latents = concept_latents(cell.labels_a, concepts)
        vectors = {c: mean_direction(decoder_a, latents[c]) for c in concepts if latents[c].size}
        order = [c for c in concepts if c in vectors]
        per_alpha = {}
        for index, alpha in enumerate(cfg.alphas):
            absolute = site.alphas[alpha]
            observed = (site.steerer.effects(np.stack([vectors[c] for c in order]), absolute, keyword_sets,
                                             keep_signatures=True,
                                             responses=alpha == cfg.test_alpha and bool(site.steerer.readouts))
                        if order else None)
            directions = random_directions(cfg.null_draws, decoder_a.shape[1],
                                           np.random.default_rng(_seed(cfg.seed, "self", la, index)))
            null, whitener = _self_null(site.steerer, directions, absolute, keyword_sets,
                                        whiten=alpha == cfg.test_alpha)
            per_alpha[alpha] = (observed, null, whitener)
        self_results[la] = {"latents": latents, "vectors": vectors, "order": order, "per_alpha": per_alpha,
                            "decoder": decoder_a}
        log.info("A layer %d (%s): %d concepts with latents, activation norm %.3f", la, site.hook, len(order),
                 site.steerer.activation_norm)

    whiteners_b: dict[int, Whitener] = {}  # B layer -> its whitener at the test alpha

    def whitener_b(site_b: _Layer, lb: int, alpha_b: float) -> Whitener:
        if lb not in whiteners_b:
            rng = np.random.default_rng(_seed(cfg.seed, "whitening-b", lb))
            directions = random_directions(WHITENING_DRAWS, site_b.steerer.width, rng)
            whiteners_b[lb] = Whitener(site_b.steerer.effects(directions, alpha_b, keep_signatures=True).signatures)
        return whiteners_b[lb]

    summary_rows, specificity_rows, downstream_rows, documents = [], [], [], []
    for cell in cells:
        la, lb = cell.layer_a, cell.layer_b
        _, meta_b = metas[(la, lb)]
        site_a = layers_a[la]
        site_b = layer(layers_b, model_b, meta_b, lb, "b")
        later_layers = [_later_layers(later, later_hooks) for later in cell.later]
        own = self_results[la]
        transfer = TransferCell.from_pairs(own["decoder"], np.load(cell.decoder_b), pd.read_parquet(cell.pairs))
        records = {c: {"concept": c, "layer_a": la, "layer_b": lb, "hook_a": site_a.hook, "hook_b": site_b.hook,
                       "n_latents_a": int(own["latents"][c].size), "latents_a": own["latents"][c].tolist(),
                       "latents_b": transfer.partners(own["latents"][c]).tolist(),
                       "n_keyword_tokens": int(keyword_sets[concepts.index(c)].size), "alphas": []}
                   for c in concepts}
        matrices = []
        for index, alpha in enumerate(cfg.alphas):
            observed_a, null_a, whitener_a = own["per_alpha"][alpha]
            alpha_a, alpha_b = site_a.alphas[alpha], site_b.alphas[alpha]
            is_test = alpha == cfg.test_alpha
            signatures_b: dict[str, dict] = {}
            whitening = (whitener_b(site_b, lb, alpha_b), whitener_a) if is_test and observed_a else None
            shared_null = (_SharedPairingNull(transfer, site_b, alpha_b, observed_a.signatures, cfg, (la, lb),
                                              responses=bool(later_layers), whitening=whitening)
                           if is_test and observed_a else None)
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
                test = is_test and not entry["self"]["broken"]
                responses_a = ([(later, observed_a.responses[later.hook_a][position]) for later in later_layers]
                               if test and later_layers else None)
                for method in cfg.transfer:
                    entry["transfer"][method] = _transfer(method, transfer, site_b, own["vectors"][c], latents,
                                                          reference, alpha_b, keyword_sets, concepts, c, cfg,
                                                          test=test,
                                                          rng=np.random.default_rng(_seed(cfg.seed, "transfer", la,
                                                                                          lb, c, method)),
                                                          keep=signatures_b.setdefault(method, {}),
                                                          shared_null=(shared_null, position),
                                                          downstream=responses_a, whitening=whitening)
                    downstream_rows += _downstream_rows(c, la, lb, method, alpha, entry["transfer"][method])
            matrices += _specificity(own, observed_a, signatures_b, records, index, alpha, cfg, la, lb, whitening)
        for c in concepts:
            record = {**records[c], "activation_norm_a": site_a.steerer.activation_norm,
                      "activation_norm_b": site_b.steerer.activation_norm, "max_kl": cfg.max_kl,
                      "test_alpha": cfg.test_alpha, "positions": cfg.positions}
            documents.append(SteeringDocument(la, lb, c, record))
            summary_rows += _summary_rows(record, cfg)
        documents.append(SteeringDocument(la, lb, None, {"layer_a": la, "layer_b": lb, "concepts": concepts,
                                                         "matrices": matrices}))
        specificity_rows += [{key: m[key] for key in SPECIFICITY_COLUMNS} for m in matrices]
        log.info("cell A%d_B%d done (%.1f s so far)", la, lb, time.perf_counter() - started)
    return SteeringResult(summary_table(summary_rows, cfg.null_draws, alpha=significance),
                          pd.DataFrame(specificity_rows, columns=list(SPECIFICITY_COLUMNS)),
                          downstream_table(downstream_rows, cfg.null_draws, alpha=significance), documents,
                          (int(prompts.shape[0]), int(prompts.shape[1])))


def _transfer(method: str, transfer: TransferCell, site_b: _Layer, vector_a: np.ndarray, latents: np.ndarray,
              reference: np.ndarray, alpha_b: float, keyword_sets, concepts: list[str], concept: str,
              cfg: SteeringConfig, test: bool, rng: np.random.Generator, keep: dict,
              shared_null: tuple = (None, None), downstream: list | None = None,
              whitening: tuple | None = None) -> dict:
    """One concept carried to B by one method at one alpha: observed effect, and its null when tested.

    `shared_null`: (the cell's `_SharedPairingNull`, this concept's row in its references), used by the
    pairing method; `downstream`: [(later cell, A's responses there)] when the later cells are read out;
    `whitening`: (B's, A's) whiteners at the test alpha (the specific agreement)."""
    n_partners = transfer.partners(latents).size
    if n_partners == 0:
        return {"status": NO_PARTNERS}
    try:
        vector_b = (transfer.pairing_transfer(latents) if method == "pairing"
                    else transfer.procrustes_transfer(vector_a, latents))
    except NoDirectionError as exc:  # e.g. too few pairs outside the concept to fit a map
        return {"status": NO_MAP, "reason": str(exc)}
    read = test and bool(downstream)
    observed = site_b.steerer.effects(vector_b[None], alpha_b, keyword_sets, reference=reference,
                                      keep_signatures=True, responses=read, whitening=whitening if test else None)
    keep[concept] = observed.signatures[0]
    result = {"n_latents_b": int(n_partners), **_side_result(observed, 0, concepts, concept),
              "agreement": float(observed.agreement[0]), "broken": bool(observed.kl[0] > cfg.max_kl),
              "map": "orthogonal Procrustes on unit decoder rows of every pair but the concept's own"
              if method == "procrustes" else "mean of paired B decoder rows"}
    if result["broken"]:
        return {**result, "status": BROKEN_B}
    if not test:
        return {**result, "status": CURVE}
    if method == "pairing":
        null_of_size, row = shared_null
        null = null_of_size(int(n_partners))
        null_agreement, null_specific = null.agreement[:, row], null.specific_agreement[:, row]
    else:
        null = site_b.steerer.effects(transfer.procrustes_null(vector_a, latents, cfg.null_draws, rng), alpha_b,
                                      reference=reference, responses=read, whitening=whitening)
        null_agreement, null_specific = null.agreement, null.specific_agreement
    specific = float(observed.specific_agreement[0])
    result.update(status=TESTED, p=permutation_p(result["agreement"], null_agreement),
                  null_agreement=null_summary(null_agreement), specific_agreement=specific,
                  specific_p=permutation_p(specific, null_specific),
                  null_specific_agreement=null_summary(null_specific),
                  whitening=f"each side whitened by the signatures of {WHITENING_DRAWS} random directions of the "
                            f"same norm (ridge {WHITENING_RIDGE} of the largest eigenvalue)",
                  null="random pairings of the same size (shared by concepts with as many partners)"
                  if method == "pairing" else "maps fitted on the same pairs with the B side shuffled")
    if read:
        result["downstream"] = [downstream_effect(later, response_a, observed.responses[later.hook_b][0],
                                                  null.responses[later.hook_b], cfg.responders)
                                for later, response_a in downstream]
    return result


def _specificity(own: dict, observed_a: Effects | None, signatures_b: dict, records: dict, alpha_index: int,
                 alpha: float, cfg: SteeringConfig, la: int, lb: int, whitening: tuple | None = None) -> list[dict]:
    """Per method: agreement of B steered with concept i's transferred vector with A's effect of concept j,
    over the concepts steered unbroken on both sides, and its diagonal-dominance test; with `whitening` (the
    test alpha) also of the specific agreement."""
    out = []
    for method, by_concept in signatures_b.items():
        included = [c for c in own["order"] if c in by_concept
                    and records[c]["alphas"][alpha_index]["status"] != BROKEN_A
                    and records[c]["alphas"][alpha_index]["transfer"][method].get("status") != BROKEN_B]
        row = {"layer_a": la, "layer_b": lb, "method": method, "alpha": alpha, "n_concepts": len(included),
               "concepts": ";".join(included), "diagonal_mean": math.nan, "off_diagonal_mean": math.nan,
               "dominance": math.nan, "dominance_p": math.nan, "min_p": math.nan, "matrix": None,
               "dominance_specific": math.nan, "dominance_p_specific": math.nan}
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
            if whitening is not None:
                specific = agreement_matrix(whitening[0](torch.as_tensor(rows)).numpy(),
                                            whitening[1](torch.as_tensor(cols)).numpy())
                test = dominance_test(specific, cfg.agreement_permutations, cfg.seed)
                row.update(matrix_specific=specific.tolist(), dominance_specific=test.statistic,
                           dominance_p_specific=test.p_value)
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
                "self_kl_null_q95": own.get("null_kl", {}).get("q95", math.nan),
                "transfer_agreement_specific": moved.get("specific_agreement", math.nan),
                "transfer_p_specific": moved.get("specific_p", math.nan),
                "transfer_specific_null_mean": moved.get("null_specific_agreement", {}).get("mean", math.nan),
                "transfer_specific_null_q95": moved.get("null_specific_agreement", {}).get("q95", math.nan)})
    return rows


DOWNSTREAM_COLUMNS = ("concept", "layer_a", "layer_b", "method", "alpha", "later_layer_a", "later_layer_b",
                      "n_responders", "overlap", "overlap_null_mean", "overlap_null_q95", "overlap_p",
                      "overlap_p_holm", "overlap_p_holm_min", "status", "top_a", "top_b")


def _responders_text(top: list[dict]) -> str:
    return "; ".join(f"{r['latent']}:{r['concept'] or '-'}" for r in top)


def _downstream_rows(concept: str, la: int, lb: int, method: str, alpha: float, moved: dict) -> list[dict]:
    return [{"concept": concept, "layer_a": la, "layer_b": lb, "method": method, "alpha": alpha,
             "later_layer_a": d["layer_a"], "later_layer_b": d["layer_b"], "n_responders": d["n_responders"],
             "overlap": d["overlap"], "overlap_null_mean": d["null_overlap"].get("mean", math.nan),
             "overlap_null_q95": d["null_overlap"].get("q95", math.nan), "overlap_p": d["overlap_p"],
             "status": TESTED, "top_a": _responders_text(d["top_a"]), "top_b": _responders_text(d["top_b"])}
            for d in moved.get("downstream", [])]


def downstream_table(rows: list[dict], null_draws: int, alpha: float | None = None) -> pd.DataFrame:
    """The downstream rows with Holm across concepts and cells per (method, later cell offset): like the
    transfer p, a family whose floor n_tests / (null_draws + 1) is not below `alpha` is `underpowered`."""
    alpha = DEFAULT_ALPHA if alpha is None else alpha
    table = pd.DataFrame(rows, columns=[c for c in DOWNSTREAM_COLUMNS if c not in ("overlap_p_holm",
                                                                                   "overlap_p_holm_min")])
    table["overlap_p_holm"] = np.nan
    table["overlap_p_holm_min"] = np.nan
    for _, index in table.groupby("method").groups.items():
        p_values = table.loc[index, "overlap_p"].to_numpy(dtype=np.float64)
        table.loc[index, "overlap_p_holm"] = adjust_pvalues(p_values, "holm")
        table.loc[index, "overlap_p_holm_min"] = min(1.0, int(np.isfinite(p_values).sum()) / (null_draws + 1))
    table.loc[table["overlap_p_holm_min"] >= alpha, "status"] = UNDERPOWERED
    table = table[list(DOWNSTREAM_COLUMNS)]
    return table.sort_values(["method", "concept", "layer_a", "later_layer_a"], kind="stable").reset_index(drop=True)


def summary_table(rows: list[dict], null_draws: int, alpha: float | None = None) -> pd.DataFrame:
    """The summary rows with Holm adjustment: transfer p across concepts and cells per method (the tested
    alpha); self p across concepts and A layers per alpha (each (concept, A layer) counted once).
    `transfer_p_holm_min` is the smallest Holm p the family can reach, n_tests / (null_draws + 1): a tested
    row whose floor is not below `alpha` (significance level, default featsim's) gets status
    `underpowered`: it cannot be significant after Holm (raise steering.null_draws)."""
    alpha = DEFAULT_ALPHA if alpha is None else alpha

    table = pd.DataFrame(rows, columns=[c for c in SUMMARY_COLUMNS + EXTRA_COLUMNS if c not in
                                        ("transfer_p_holm", "transfer_p_holm_min", "self_p_holm",
                                         "transfer_p_specific_holm")])
    table["transfer_p_holm"] = np.nan
    table["transfer_p_specific_holm"] = np.nan
    table["transfer_p_holm_min"] = np.nan
    for _, index in table.groupby(["method", "alpha"]).groups.items():
        p_values = table.loc[index, "transfer_p"].to_numpy()
        table.loc[index, "transfer_p_holm"] = adjust_pvalues(p_values, "holm")
        table.loc[index, "transfer_p_specific_holm"] = adjust_pvalues(
            table.loc[index, "transfer_p_specific"].to_numpy(dtype=np.float64), "holm")
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
    """The diagonal-dominance rows with Holm across cells per (method, alpha), as `dominance_p_holm` (and
    `dominance_p_specific_holm` for the specific agreement's matrices)."""
    table = table.copy()
    for column in ("dominance_p", "dominance_p_specific"):
        table[f"{column}_holm"] = np.nan
        for _, index in table.groupby(["method", "alpha"]).groups.items():
            table.loc[index, f"{column}_holm"] = adjust_pvalues(table.loc[index, column].to_numpy(np.float64), "holm")
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
    "transfer_agreement_specific": "transfer_agreement of the whitened signatures: each side's effect whitened by "
                                   "the second moment of random-direction effects at its hook and alpha (only at "
                                   "steering.test_alpha); the concept-specific agreement",
    "transfer_p_specific": "p of transfer_agreement_specific against the same null transfers, (b+1)/(m+1)",
    "transfer_p_specific_holm": "Holm across concepts and cells (per method): the family the functional result uses",
    "transfer_specific_null_mean": "mean specific agreement of the null transfers",
    "transfer_specific_null_q95": "its 95% quantile",
    "dominance_specific": "dominance of the specific-agreement matrix (whitened signatures; test alpha only)",
    "dominance_p_specific": "its label-permutation p", "dominance_p_specific_holm": "Holm across cells per method",
    "later_layer_a": "later A layer whose SAE is read out while A is steered at layer_a",
    "later_layer_b": "later B layer read out while B is steered at layer_b with the transferred vector",
    "n_responders": "latents per side with the largest mean |delta activation| at the last prompt position",
    "overlap": "pairs of the later cell joining an A responder and a B responder",
    "overlap_null_mean": "mean overlap when B is steered with the null transfers",
    "overlap_null_q95": "its 95% quantile",
    "overlap_p": "p of overlap against the null transfers' responders, (b+1)/(m+1)",
    "overlap_p_holm": "Holm across concepts and cells (per method)",
    "overlap_p_holm_min": "smallest overlap_p_holm the family can reach: n_tests / (null_draws + 1)",
    "top_a": "A's responders, largest first, as latent:concept label (- unlabelled)",
    "top_b": "B's responders, largest first, as latent:concept label (- unlabelled)",
}
