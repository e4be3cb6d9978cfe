"""Paper-scale rehearsal: one Pythia-70m x 160m layer cell, synthetic, through the real stages; grid cost.

Generates code stores shaped like the study's SAEs (32,768 latents per side, TopK k = 32 codes with a
Zipf firing skew, a planted partial correspondence: `--shared` of A's latents have a B partner that fires
on the same tokens with noisy values, and decoders of width 512 / 768 whose planted rows are related by a
fixed linear map), then runs the library calls behind the workflow rules, each in a child process so its
CPU time and peak memory are its own: correlate -> labels (A, B) -> pair (hungarian, one_to_one) ->
score (svcca, rsa, cka, procrustes, mutual_knn; `--permutations` draws) -> summary. It then measures the
per-permutation cost of each metric's null at the hungarian cell's n and prints the projected cost of the
full grid: 5 x 12 = 60 cells (correlate, pair, score per cell), 17 (model, layer) label jobs, 10,000
permutations per metric (the worst case: sequential stopping ends most cells far earlier).
Usage: python benchmarks/paper_scale.py [--tokens N] [--latents D] [--permutations M] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import scipy.sparse as sp

METRICS = ("svcca", "rsa", "cka", "procrustes", "mutual_knn")
METRIC_OPTIONS = {"svcca": {"k": 50}}
GRID_CELLS, LABEL_JOBS, GRID_PERMUTATIONS = 60, 17, 10_000
PAIRINGS = {
    "hungarian": {"strategy": "hungarian", "min_corr": 0.1},
    "one_to_one": {"strategy": "one_to_one", "min_corr": 0.1},
}


# ---------------------------------------------------------------- synthetic stores


def zipf_weights(d: int, exponent: float) -> np.ndarray:
    weights = 1.0 / np.arange(1, d + 1) ** exponent
    return weights / weights.sum()


def write_synthetic(root: Path, n_tokens: int, d_sae: int, k: int, shared: float, seed: int) -> dict:
    """tokens.zarr (word tokenizer), codes_a/b.zarr (TopK-like CSR), decoder_a/b.npy; returns the plant."""
    from featsim.stores import CodesWriter, write_tokens
    from featsim.toy.tokenizer import build_word_tokenizer

    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(2000)]
    tokenizer = build_word_tokenizer(words)
    tokenizer.save_pretrained(str(root / "tokenizer"))
    context = 128
    n_seq = n_tokens // context
    tokens = rng.integers(4, 4 + len(words), size=(n_seq, context)).astype(np.int32)
    write_tokens(root / "tokens.zarr", tokens, np.ones_like(tokens, dtype=bool), {"tokenizer": str(root / "tokenizer")})
    n_shared = int(shared * d_sae)
    partner = rng.permutation(d_sae)[:n_shared]  # A latent a < n_shared <-> B latent partner[a]
    weights_a = zipf_weights(d_sae, 0.8)[rng.permutation(d_sae)]
    weights_b = zipf_weights(d_sae, 0.8)[rng.permutation(d_sae)]
    block = 32768
    with CodesWriter(root / "codes_a.zarr", d_sae) as writer_a, CodesWriter(root / "codes_b.zarr", d_sae) as writer_b:
        for start in range(0, n_seq * context, block):
            rows = min(block, n_seq * context - start)
            cols_a = rng.choice(d_sae, size=(rows, k), p=weights_a)  # a repeat merges: L0 just under k
            vals_a = rng.exponential(1.0, (rows, k)).astype(np.float32)
            cols_b = rng.choice(d_sae, size=(rows, k), p=weights_b)
            vals_b = rng.exponential(1.0, (rows, k)).astype(np.float32)
            planted = (cols_a < n_shared) & (rng.random((rows, k)) < 0.8)
            cols_b = np.where(planted, partner[np.minimum(cols_a, n_shared - 1)], cols_b)
            vals_b = np.where(planted, vals_a * rng.uniform(0.7, 1.3, (rows, k)), vals_b).astype(np.float32)
            row_ids = np.repeat(np.arange(rows), k)
            for writer, cols, vals in ((writer_a, cols_a, vals_a), (writer_b, cols_b, vals_b)):
                writer.append(sp.coo_matrix((vals.ravel(), (row_ids, cols.ravel())), shape=(rows, d_sae)).tocsr())
    decoder_a = rng.standard_normal((d_sae, 512)).astype(np.float32)
    decoder_b = rng.standard_normal((d_sae, 768)).astype(np.float32)
    mapping = rng.standard_normal((512, 768)).astype(np.float32) / np.sqrt(512)
    decoder_b[partner] = decoder_a[:n_shared] @ mapping + 0.5 * decoder_b[partner]
    np.save(root / "decoder_a.npy", decoder_a)
    np.save(root / "decoder_b.npy", decoder_b)
    return {"n_shared": n_shared}


# ---------------------------------------------------------------- stages, each in a child process


def run_stage(name: str, function: Callable[[], dict], table: list[dict], jobs: int = 1) -> dict:
    """Run `function` in a forked child; record wall, CPU (user + sys) and peak RSS of that child."""
    read, write = os.pipe()
    started = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # child
        os.close(read)
        status = 0
        try:
            out = function() or {}
        except Exception as error:  # reported by the parent, which stops the rehearsal
            out, status = {"error": f"{type(error).__name__}: {error}"}, 1
        with os.fdopen(write, "w") as pipe:
            json.dump(out, pipe)
        os._exit(status)
    os.close(write)
    with os.fdopen(read) as pipe:
        out = json.loads(pipe.read() or "{}")
    _, status, usage = os.wait4(pid, 0)
    row = {"stage": name, "jobs": jobs, "wall_s": time.perf_counter() - started,
           "cpu_s": usage.ru_utime + usage.ru_stime, "peak_mb": usage.ru_maxrss / 1024, **out}
    if status != 0:
        raise RuntimeError(f"stage {name} failed: {out.get('error')}")
    table.append(row)
    print(f"  {name:<22} wall {row['wall_s']:7.1f} s  CPU {row['cpu_s']:7.1f} s  peak {row['peak_mb']:6.0f} MB",
          flush=True)
    return row


def correlate(root: Path) -> dict:
    from featsim.targets.correlate import correlate_code_stores

    result = correlate_code_stores(root / "codes_a.zarr", root / "codes_b.zarr", root / "corr.zarr",
                                   {"top_k": 8, "min_active": 5})
    return {"engine": result.engine}


def labels(root: Path, side: str) -> dict:
    from featsim.labels import LabelsConfig
    from featsim.targets.labels import write_labels

    table = write_labels(root / f"codes_{side}.zarr", root / "tokens.zarr", root / f"labels_{side}.parquet",
                         LabelsConfig())
    return {"latents": len(table)}


def pair(root: Path) -> dict:
    from featsim.targets.pairing import write_pairs

    counts = {}
    for name, variant in PAIRINGS.items():
        pairs = write_pairs(root / "corr.zarr", root / "labels_a.parquet", root / "labels_b.parquet", variant,
                            root / f"pairs_{name}.parquet", root / f"pairs_{name}.diagnostics.json",
                            ids={"experiment": "paper", "comparison": "main", "pairing": name,
                                 "layer_a": 0, "layer_b": 0})
        counts[f"pairs_{name}"] = len(pairs)
    return counts


def score(root: Path, permutations: int) -> dict:
    from featsim.targets.scoring import score_cell

    seconds = {}
    for metric in METRICS:
        started = time.process_time()
        score_cell(root / "pairs_hungarian.parquet", root / "decoder_a.npy", root / "decoder_b.npy",
                   root / f"score_{metric}.json", root / f"null_{metric}.npy", metric=metric,
                   null_config={"permutations": permutations, "seed": 0, "device": "cpu"},
                   metric_options=METRIC_OPTIONS.get(metric, {}), threads=2,
                   ids={"experiment": "paper", "comparison": "main", "pairing": "hungarian",
                             "layer_a": 0, "layer_b": 0})
        seconds[metric] = time.process_time() - started
    return {"cpu_by_metric": seconds}


def summary(root: Path) -> dict:
    from featsim.summary import summarize
    from featsim.targets.summary import write_summary_target

    table = summarize([root / f"score_{metric}.json" for metric in METRICS],
                             [root / "pairs_hungarian.diagnostics.json"], "main", "hungarian", "holm")
    write_summary_target(table, root / "summary.csv", root / "summary.html", "paper-scale rehearsal",
                         {"correction": "holm"},
                         ids={"kind": "summary", "experiment": "paper"})
    return {"rows": len(table)}


def null_costs(root: Path, draws: int = 32) -> dict:
    """Setup (decomposition / ranks) and per-permutation CPU seconds of each metric's null at this n."""
    from featsim import _null_kernels as kernels
    from featsim.scoring import load_decoder, load_pairs, paired_rows

    pairs_a, pairs_b = load_pairs(root / "pairs_hungarian.parquet")
    X = paired_rows(load_decoder(root / "decoder_a.npy"), pairs_a)
    Y = paired_rows(load_decoder(root / "decoder_b.npy"), pairs_b)
    rng = np.random.default_rng(0)
    costs = {}
    for metric in METRICS:
        options = {"k": 10} if metric == "mutual_knn" else METRIC_OPTIONS.get(metric, {})
        started = time.process_time()
        _, kernel = kernels.prepare(metric, X, Y, options, kernels.NumpyBackend(), "auto",
                                    n_permutations=GRID_PERMUTATIONS)
        setup = time.process_time() - started
        size = min(kernels.batch_size_for(kernel), draws // 2)
        perms = np.stack([rng.permutation(len(X)) for _ in range(2 * size)])
        kernel.scores(perms[:size])  # numba cache load / first call
        started = time.process_time()
        for start in range(0, len(perms), size):
            kernel.scores(perms[start:start + size])
        costs[metric] = {"setup_s": setup, "per_permutation_s": (time.process_time() - started) / len(perms)}
    return {"n_pairs": int(len(X)), "null_costs": costs}


# ---------------------------------------------------------------- projection


def projection(rows: dict[str, dict], scale: float) -> list[tuple[str, float]]:
    """CPU hours of the full grid from the measured stages (token-proportional stages scaled by `scale`)."""
    costs = rows["null costs"]["null_costs"]
    per_cell_null = sum(c["setup_s"] + GRID_PERMUTATIONS * c["per_permutation_s"] for c in costs.values())
    labels_job = (rows["labels A"]["cpu_s"] + rows["labels B"]["cpu_s"]) / 2
    return [
        ("correlate (60 cells)", GRID_CELLS * rows["correlate"]["cpu_s"] * scale / 3600),
        ("labels (17 model-layers)", LABEL_JOBS * labels_job * scale / 3600),
        ("pair (60 cells, 2 variants)", GRID_CELLS * rows["pair"]["cpu_s"] / 3600),
        (f"score (60 cells x 5 metrics x {GRID_PERMUTATIONS} perms)", GRID_CELLS * per_cell_null / 3600),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, default=1_048_576)
    parser.add_argument("--latents", type=int, default=32_768)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--shared", type=float, default=0.3)
    parser.add_argument("--permutations", type=int, default=100)
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        root = Path(tmp)
        table: list[dict] = []
        print(f"rehearsal: {args.tokens} tokens, {args.latents} latents per side, TopK k={args.k}, "
              f"{args.shared:.0%} planted partners, decoders 512/768 (CPU seconds; machine: {os.cpu_count()} cores)")
        run_stage("generate (not a stage)", lambda: write_synthetic(root, args.tokens, args.latents, args.k,
                                                                    args.shared, seed=0), table)
        run_stage("correlate", lambda: correlate(root), table)
        run_stage("labels A", lambda: labels(root, "a"), table)
        run_stage("labels B", lambda: labels(root, "b"), table)
        run_stage("pair", lambda: pair(root), table, jobs=2)
        run_stage("score", lambda: score(root, args.permutations), table, jobs=1)
        run_stage("summary", lambda: summary(root), table)
        run_stage("null costs", lambda: null_costs(root), table)
    rows = {row["stage"]: row for row in table}
    print("\n| stage | jobs | wall s | CPU s | peak MB | notes |\n|---|---|---|---|---|---|")
    for row in table:
        notes = {key: value for key, value in row.items()
                 if key not in ("stage", "jobs", "wall_s", "cpu_s", "peak_mb", "null_costs")}
        print(f"| {row['stage']} | {row['jobs']} | {row['wall_s']:.1f} | {row['cpu_s']:.1f} | {row['peak_mb']:.0f} | "
              f"{json.dumps(notes, default=lambda v: round(v, 2)) if notes else ''} |")
    costs = rows["null costs"]
    print(f"\nnull costs at n = {costs['n_pairs']} pairs (CPU s): " + ", ".join(
        f"{metric} setup {c['setup_s']:.1f} + {c['per_permutation_s'] * 1e3:.1f} ms/perm"
        for metric, c in costs["null_costs"].items()))
    scale = 1_048_576 / args.tokens
    print(f"\nprojected Pythia grid on this CPU (token-proportional stages x {scale:.2f} to 1M tokens):")
    total = 0.0
    for name, hours in projection(rows, scale):
        total += hours
        print(f"  {name:<48} {hours:8.1f} CPU h")
    print(f"  {'total':<48} {total:8.1f} CPU h  (~{total / 2:.1f} h wall on 2 cores)")


if __name__ == "__main__":
    main()
