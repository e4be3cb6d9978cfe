"""Target of the `steering_<cmp>` rules: steer every concept of every layer cell of one comparison; write the
per-concept and per-cell jsons, the summary, specificity and downstream tables, and the figures."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Mapping

import pandas as pd
import torch
from threadpoolctl import threadpool_limits

from featsim.figures import save_figure
from featsim.provenance import make_provenance, write_json, write_table
from featsim.steering_config import SteeringConfig
from featsim.steering_figures import downstream_figure, effects_figure, matrix_figure
from featsim.steering_stage import (COLUMN_DOCS, SteeringCell, SteeringDocument, SteeringSide, specificity_table,
                                    steer_comparison)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SteeringOutputs:
    """The outputs of one comparison's steering job (paths): per layer cell (layer_a, layer_b) a json per concept
    and one of the agreement matrices, then the tables and figures."""

    concept_jsons: dict  # (layer_a, layer_b) -> {concept: json path}
    agreement_jsons: dict  # (layer_a, layer_b) -> json path
    summary: str
    specificity: str
    downstream: str
    effects_figure: str
    matrix_figure: str
    downstream_figure: str

    def path_of(self, document: SteeringDocument) -> str:
        """Where one steering record goes."""
        cell = (document.layer_a, document.layer_b)
        return self.agreement_jsons[cell] if document.concept is None else self.concept_jsons[cell][document.concept]


def run_steering(cells: list[SteeringCell], concept_files: dict, side_a: SteeringSide, side_b: SteeringSide,
                 tokens_path, split_config: dict, steering_config: dict, exp_dir, ids: Mapping[str, Any],
                 outputs: SteeringOutputs, significance: float | None = None, threads: int = 1) -> pd.DataFrame:
    """The `steering_<cmp>` rule: every json, the tables and figures of one comparison; provenance of each: the
    config section `steering_config`, `ids`, and the prompts. `significance`: the config's top-level `alpha`."""
    cfg = SteeringConfig.from_config(steering_config)
    started = time.perf_counter()
    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, int(threads)))
    try:
        with threadpool_limits(limits=max(1, int(threads)), user_api="blas"):
            result = steer_comparison(cells, concept_files, side_a, side_b, tokens_path, split_config, cfg, exp_dir,
                                      significance)
    finally:
        torch.set_num_threads(previous)
    for document in result.documents:
        provenance = make_provenance(steering_config, kind="steering", **ids, layer_a=document.layer_a,
                                     layer_b=document.layer_b, prompts=result.prompt_shape[0],
                                     prompt_length=result.prompt_shape[1],
                                     vocabulary="the experiment's shared tokenizer (all d_vocab tokens)",
                                     split=dict(split_config))
        write_json(outputs.path_of(document), {**document.record, "provenance": provenance})
    summary, specificity, downstream = result.summary, specificity_table(result.specificity), result.downstream
    table_ids = {**ids, "seconds": round(time.perf_counter() - started, 1), "alpha": significance}
    for path, table, kind in ((outputs.summary, summary, "steering_summary"),
                              (outputs.specificity, specificity, "steering_specificity"),
                              (outputs.downstream, downstream, "steering_downstream")):
        write_table(path, table, steering_config, COLUMN_DOCS, ids={**table_ids, "kind": kind})
    comparison = ids.get("comparison", "")
    save_figure(effects_figure(summary, cfg.test_alpha, comparison), outputs.effects_figure)
    agreements = [document.record for document in result.documents if document.concept is None]
    save_figure(matrix_figure(agreements, cfg.test_alpha, comparison), outputs.matrix_figure)
    save_figure(downstream_figure(downstream, comparison), outputs.downstream_figure)
    log.info("steering %s: %d cells, %d concepts in %.1f s", comparison, len(cells), len(concept_files),
             time.perf_counter() - started)
    return summary
