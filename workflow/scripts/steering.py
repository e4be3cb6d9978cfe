"""Snakemake script of rules `steering_<cmp>`: steer every concept of every layer cell of one comparison."""

from featsim.layout import experiment_dir
from featsim.rulelog import rule_log
from featsim.steering_stage import LaterCell, SteeringCell, SteeringSide, cells_after
from featsim.targets.steering import SteeringOutputs, run_steering

sm = snakemake  # noqa: F821 (injected by Snakemake)
rule_log(sm.log[0])

inputs, params, output, concepts = sm.input, sm.params, sm.output, list(sm.params.concepts)
later = [LaterCell(layer_a=int(la), layer_b=int(lb), meta_a=inputs.later_meta_a[i], meta_b=inputs.later_meta_b[i],
                   labels_a=inputs.later_labels_a[i], labels_b=inputs.later_labels_b[i], pairs=inputs.later_pairs[i])
         for i, (la, lb) in enumerate(params.later_cells)]
cells = [
    SteeringCell(layer_a=int(la), layer_b=int(lb), decoder_a=inputs.decoder_a[i], decoder_b=inputs.decoder_b[i],
                 meta_a=inputs.meta_a[i], meta_b=inputs.meta_b[i], pairs=inputs.pairs[i], labels_a=inputs.labels_a[i],
                 later=cells_after(int(la), int(lb), later))
    for i, (la, lb) in enumerate(params.cells)
]
cell_keys = [(int(la), int(lb)) for la, lb in params.cells]
outputs = SteeringOutputs(concept_jsons={key: dict(paths) for key, paths in zip(cell_keys, params.concept_outputs)},
                          agreement_jsons=dict(zip(cell_keys, output.agreement)), summary=output.summary,
                          specificity=output.specificity, downstream=output.downstream,
                          effects_figure=output.effects_figure, matrix_figure=output.matrix_figure,
                          downstream_figure=output.downstream_figure)
run_steering(cells, dict(zip(concepts, inputs.concept_files)), SteeringSide(**params.side_a),
             SteeringSide(**params.side_b), inputs.tokens, dict(params.split), dict(params.steering),
             experiment_dir(sm.wildcards.exp), {"experiment": sm.wildcards.exp, "comparison": params.comparison,
                                             "pairing": params.pairing, "rule": sm.rule},
             outputs, significance=float(params.alpha), threads=sm.threads)
