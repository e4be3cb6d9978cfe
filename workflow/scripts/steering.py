"""Snakemake script of rules `steering_<cmp>`: steer every concept of every layer cell of one comparison."""

from featsim.rulelog import rule_log
from featsim.steering_stage import SteeringCell, SteeringSide, run_steering

sm = snakemake  # noqa: F821 (injected by Snakemake)
rule_log(sm.log[0])

inputs, params, concepts = sm.input, sm.params, list(sm.params.concepts)
cells = [
    SteeringCell(layer_a=int(la), layer_b=int(lb), decoder_a=inputs.decoder_a[i], decoder_b=inputs.decoder_b[i],
                 meta_a=inputs.meta_a[i], meta_b=inputs.meta_b[i], pairs=inputs.pairs[i],
                 members={c: inputs.members[i * len(concepts) + j] for j, c in enumerate(concepts)},
                 outputs={c: sm.output.concepts[i * len(concepts) + j] for j, c in enumerate(concepts)},
                 agreement=sm.output.agreement[i])
    for i, (la, lb) in enumerate(params.cells)
]
run_steering(cells, dict(zip(concepts, inputs.concept_files)), SteeringSide(**params.side_a),
             SteeringSide(**params.side_b), inputs.tokens, dict(params.split), dict(params.steering),
             f"results/{sm.wildcards.exp}", {"experiment": sm.wildcards.exp, "comparison": params.comparison,
                                             "pairing": params.pairing},
             sm.output.summary, sm.output.specificity, sm.output.effects_figure, sm.output.matrix_figure,
             threads=sm.threads)
