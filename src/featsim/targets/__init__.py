"""Rule targets: the thin layer between a workflow script and the stage modules.

Each function reads its rule's inputs, calls the stage's computation (arrays, stores and typed configs in;
results out, except that the streaming stages, activations and codes, fill their stores batch by batch through
`featsim.stores`), stamps the provenance record from the config it was given and the target's `ids`
(the wildcards and rule that name it) and writes every output atomically. One module per rule
file (`rules/report.smk`'s in two: `summary` and `figures`); the toy route's targets live in `featsim.toy`.
"""
