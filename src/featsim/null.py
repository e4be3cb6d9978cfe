"""Shuffled-pairing permutation null: how high is the metric when the pairing is random?

The null permutes the rows of Y (the B side of the pairs) and nothing else. Permutation i is the
i-th `rng.permutation(n)` of `numpy.random.default_rng(seed)`, whatever the batch size or device,
so the fast kernels (featsim._null_kernels) and the plain loop see the same permutations. When the
n! - 1 re-pairings other than the observed one number at most m, the null is all of them instead
(lexicographic order, no seed): the exact permutation test, m = n! - 1.
p = (b + 1) / (m + 1), b = #{null >= observed - tolerance} (ties count; the tolerance absorbs
rounding between the float64 observed value and the null arithmetic, as scipy.stats.permutation_test
does), so p >= p_min = max(1/(m+1), 1/n!) always. z = (observed - null_mean) / null_std (sample std,
ddof=1), NaN when null_std is within the null's rounding tolerance (its spread may be rounding alone).

Sequential stopping (`sequential_h` = h, Besag & Clifford 1991): the stream stops at the draw L that
brings the count of null values >= observed to h, and p = h / L; a cell that never reaches h draws all m
and keeps p = (b+1)/(m+1). Valid (P(p <= u) <= u), with the same first L draws as the fixed-m null, so
clearly non-significant cells stop after about h / p draws while significant ones draw all m. Not used
for an exact null (every re-pairing is drawn in a fixed order, not at random).
Beside p: the exact permutation mean and variance where a closed form exists (featsim.null_moments) and
a moment-matched Pearson III tail p (featsim.null_tail) that resolves p below 1/(m+1); never p itself.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from featsim import _null_kernels as kernels
from featsim.metrics import SVCCA_FAMILY, Metric, check_svcca_dimensions, get_metric, paired_arrays
from featsim.null_moments import Moments
from featsim.null_tail import TailFit, fit_tail

log = logging.getLogger(__name__)

NULL_TOLERANCE = {"float64": 1e-9, "float32": 1e-6}
"""Absolute agreement (scores lie in [-1, 1]) between a null value and the metric recomputed in
float64 on the permuted Y; also the tie tolerance of the p-value count. Measured: float64 kernels
~1e-15; float32 kernels (svcca, procrustes, cka, cka_unbiased, rsa) <= 5e-8 at n = 1,000-5,000
(null standard deviations there are 3e-4 to 3e-3) and ~1e-7 on tiny inputs (tests/test_null.py)."""


def smallest_p(n_pairs: int, n_permutations: int) -> float:
    """Smallest p a cell can reach: max(1/(m+1), 1/n!); n! (the distinct re-pairings of n pairs, the
    observed one included) through log-gamma, so large n costs nothing and never overflows."""
    if math.lgamma(n_pairs + 1) > math.log(n_permutations + 1) + 1.0:  # n! far above m + 1
        return 1.0 / (n_permutations + 1)
    return max(1.0 / (n_permutations + 1), 1.0 / math.factorial(n_pairs))


def is_exact(n_pairs: int, n_permutations: int) -> bool:
    """Whether all n! - 1 re-pairings other than the observed one fit in m permutations."""
    if math.lgamma(n_pairs + 1) > math.log(n_permutations + 1) + 1.0:  # n! far above m: skip the big integer
        return False
    return math.factorial(n_pairs) - 1 <= n_permutations


FEW_PAIRS_FACTOR = 5
"""Guard: flag `n_lt_5k` when n pairs < 5 x max(k_a, k_b) SVCCA components (reference-method §5.2)."""


@dataclass(frozen=True)
class NullResult:
    """Observed score, the m permuted scores and their summary."""

    metric: str
    observed: float
    null: np.ndarray  # [m] float64
    p_value: float
    z: float
    null_mean: float
    null_std: float
    n_pairs: int
    n_permutations: int
    seed: int
    details: dict[str, Any] = field(default_factory=dict)  # e.g. k_a, k_b, threshold
    flags: tuple[str, ...] = ()
    method: str = "fast"  # "fast" kernels or the plain "loop"
    device: str = "cpu"
    backend: str = "numpy"  # numpy | numba | torch | loop: what ran the null
    precision: str = "float64"
    tolerance: float = NULL_TOLERANCE["float64"]
    exact: bool = False  # the null is every re-pairing (n! - 1 <= requested m)
    p_min: float = 0.0  # smallest attainable p, max(1/(m+1), 1/n!)
    exact_moments: Moments | None = None  # closed-form null mean and variance (featsim.null_moments)
    tail: TailFit | None = None  # moment-matched tail p beside p_value (featsim.null_tail)
    sequential_h: int | None = None  # Besag-Clifford stopping after h exceedances (None: fixed m)
    max_permutations: int = 0  # draws allowed (m); n_permutations is the draws made
    sequential_stopped: bool = False  # the stream stopped at its h-th exceedance: p = h / n_permutations

    @property
    def z_exact(self) -> float:
        """(observed - exact mean) / exact sd; NaN without exact moments or with an sd at rounding level."""
        moments = self.exact_moments
        if moments is None or null_spread_is_rounding(moments.std, moments.mean, self.tolerance):
            return float("nan")
        return (self.observed - moments.mean) / moments.std

    def to_dict(self) -> dict:
        """JSON-ready summary (everything but the null draws)."""
        moments, tail = self.exact_moments, self.tail
        return {
            "metric": self.metric, "observed": self.observed, "null_mean": self.null_mean,
            "null_std": self.null_std, "p_value": self.p_value, "z": self.z, "n_pairs": self.n_pairs,
            "n_permutations": self.n_permutations, "seed": self.seed, **self.details,
            "flags": list(self.flags), "null_method": self.method, "null_device": self.device,
            "null_backend": self.backend, "null_precision": self.precision, "null_tolerance": self.tolerance,
            "null_exact": self.exact, "p_min": self.p_min,
            "null_mean_exact": moments.mean if moments else None, "null_std_exact": moments.std if moments else None,
            "z_exact": self.z_exact if moments else None, "null_skew": tail.skew if tail else None,
            "p_tail": tail.p_tail if tail else None, "p_cantelli": tail.p_cantelli if tail else None,
            "tail_method": tail.method if tail else None, "tail_flags": list(tail.flags) if tail else [],
            "sequential_h": self.sequential_h, "max_permutations": self.max_permutations,
            "sequential_stopped": self.sequential_stopped,
        }


def permutation_batches(n: int, n_permutations: int, seed: int, batch_size: int) -> Iterator[np.ndarray]:
    """The permutation stream in batches [<= batch_size, n] (int64): every non-identity permutation
    when they number at most `n_permutations` (`is_exact`; the stream then holds n! - 1 of them),
    else `n_permutations` seeded random ones."""
    if is_exact(n, n_permutations):
        every = itertools.islice(itertools.permutations(range(n)), 1, None)  # lexicographic: identity first
        while batch := list(itertools.islice(every, batch_size)):
            yield np.array(batch, dtype=np.int64).reshape(len(batch), n)
        return
    rng = np.random.default_rng(seed)
    done = 0
    while done < n_permutations:
        size = min(batch_size, n_permutations - done)
        yield np.stack([rng.permutation(n) for _ in range(size)])
        done += size


GPU_DEVICE_FILES = ("/dev/nvidiactl", "/dev/kfd")
"""Device nodes of the NVIDIA and ROCm drivers: without one, "auto" picks the CPU without importing torch."""


def _gpu_driver_present() -> bool:
    return any(Path(path).exists() for path in GPU_DEVICE_FILES)


def resolve_backend(device: str) -> kernels.Backend:
    """The array backend of the fast kernels: numpy on "cpu", torch on "cuda"/"cuda:N"; "auto" -> cuda
    when torch sees a GPU, else cpu. torch is imported only when a GPU driver is present."""
    if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"config key 'null.device': {device!r} is not one of auto, cpu, cuda")
    if device == "cpu" or (device == "auto" and not _gpu_driver_present()):
        return kernels.NumpyBackend()
    import torch

    if not torch.cuda.is_available():
        if device == "auto":
            return kernels.NumpyBackend()
        raise ValueError("config key 'null.device': cuda requested but no GPU is visible; use auto or cpu")
    return kernels.TorchBackend("cuda" if device == "auto" else device)


def null_spread_is_rounding(null_std: float, null_mean: float, tolerance: float) -> bool:
    """Whether a null's sd is within its values' rounding tolerance (NULL_TOLERANCE of the precision the
    null ran in, relative to the metric's scale max(1, |mean|)): such a spread may be rounding alone
    (float32 kernels give sd ~1e-8 on a constant null), so a z from it would be noise over noise."""
    return not (np.isfinite(null_std) and null_std > tolerance * max(1.0, abs(null_mean)))


def _summary(observed: float, null: np.ndarray, tolerance: float) -> tuple[float, float, float, float]:
    exceed = int(np.count_nonzero(null >= exceedance_threshold(observed, tolerance)))
    p_value = (exceed + 1) / (null.size + 1)
    null_mean = float(null.mean())
    null_std = float(null.std(ddof=1)) if null.size > 1 else float("nan")
    rounding = null_spread_is_rounding(null_std, null_mean, tolerance)
    z = float("nan") if rounding else (observed - null_mean) / null_std
    return p_value, z, null_mean, null_std


def _ordered_map(function: Callable, items: Iterator, workers: int) -> Iterator:
    """function(item) for each item, in order, with at most 2 x workers items in flight (cancelled
    when the consumer stops early)."""
    if workers <= 1:
        yield from map(function, items)
        return
    with ThreadPoolExecutor(workers) as pool:
        pending: deque = deque()
        try:
            for item in items:
                pending.append(pool.submit(function, item))
                if len(pending) >= 2 * workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def exceedance_threshold(observed: float, tolerance: float) -> float:
    """Null values at or above this count as >= observed (ties within the rounding tolerance count)."""
    return observed - tolerance * max(1.0, abs(observed))


def _collect(batches: Iterator[np.ndarray], n_draws: int, threshold: float, stop_after: int | None,
             bar) -> np.ndarray:
    """The null draws in stream order; with `stop_after` = h, up to and including the draw that brings
    the count of draws >= threshold to h (Besag-Clifford), else all `n_draws`."""
    null = np.empty(n_draws)
    done = seen = 0
    with contextlib.closing(batches):
        for values in batches:
            keep = values.size
            if stop_after is not None:
                hits = seen + np.cumsum(values >= threshold)
                if hits.size and hits[-1] >= stop_after:
                    keep = int(np.searchsorted(hits, stop_after)) + 1
                seen = int(hits[keep - 1]) if hits.size else seen
            null[done:done + keep] = values[:keep]
            done += keep
            bar.update(keep)
            if stop_after is not None and seen >= stop_after:
                break
    return null[:done]


@contextlib.contextmanager
def _kernel_threads(kernel, threads: int) -> Iterator[int]:
    """Thread settings of one null run; yields the number of worker threads.

    CPU GEMM kernels run `threads` workers with one BLAS thread each (batched eigvalsh barely
    scales with BLAS threads); the numba RSA kernel parallelises inside (small numpy RSA nulls run
    one worker); GPU kernels run one worker with TF32 off (its 10-bit mantissa would break
    NULL_TOLERANCE).
    """
    backend = kernel.backend
    if isinstance(kernel, kernels.RankCrossKernel) and kernel.engine != "torch":
        if kernel.engine == "numpy":
            yield 1
            return
        import numba

        numba_threads = numba.get_num_threads()
        numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
        try:
            yield 1
        finally:
            numba.set_num_threads(numba_threads)
    elif isinstance(backend, kernels.NumpyBackend):
        with threadpool_limits(limits=1, user_api="blas"):
            yield threads
    else:
        torch = backend.torch
        allow_tf32, torch_threads = torch.backends.cuda.matmul.allow_tf32, torch.get_num_threads()
        torch.backends.cuda.matmul.allow_tf32 = False
        try:
            if backend.is_cpu:
                torch.set_num_threads(1)
            yield threads if backend.is_cpu else 1
        finally:
            torch.backends.cuda.matmul.allow_tf32 = allow_tf32
            torch.set_num_threads(torch_threads)


def _run_kernel(kernel, n: int, n_permutations: int, seed: int, threads: int, progress: bool,
                threshold: float = math.inf, stop_after: int | None = None) -> np.ndarray:
    """Null of up to m draws (`n_permutations` is the stream's length: n! - 1 for an exact null);
    `stop_after` = h stops after h draws >= `threshold`."""
    batch_size = kernels.batch_size_for(kernel)
    if stop_after is not None:  # smaller batches waste fewer draws past the stopping point
        batch_size = max(1, min(batch_size, 64))
    batches = permutation_batches(n, n_permutations, seed, batch_size)
    with _kernel_threads(kernel, threads) as workers, \
            tqdm(total=n_permutations, desc="null", unit="perm", disable=not progress) as bar:
        return _collect(_ordered_map(kernel.scores, batches, workers), n_permutations, threshold, stop_after, bar)


def _run_loop(metric: Callable[[np.ndarray, np.ndarray], float], X: np.ndarray, Y: np.ndarray,
              n_permutations: int, seed: int, progress: bool, threshold: float = math.inf,
              stop_after: int | None = None) -> np.ndarray:
    def batch_scores(batch: np.ndarray) -> np.ndarray:
        return np.array([metric(X, Y[perm]) for perm in batch])

    batches = (batch_scores(batch) for batch in permutation_batches(X.shape[0], n_permutations, seed, 64))
    with tqdm(total=n_permutations, desc="null (loop)", unit="perm", disable=not progress) as bar:
        return _collect(batches, n_permutations, threshold, stop_after, bar)


def permutation_test(X, Y, metric: str | Callable, n_permutations: int = 10000, seed: int = 0, *,
                     options: dict | None = None, device: str = "auto", precision: str = "auto",
                     method: str = "auto", threads: int | None = None, progress: bool = False,
                     sequential_h: int | None = None) -> NullResult:
    """Observed metric of the pairs (X[i], Y[i]) and its null under random re-pairing of Y's rows.

    metric: a METRICS name (fast kernel when it has one) or a callable (X, Y) -> float (plain loop).
    options: the metric's options (e.g. {"threshold": 0.99} for svcca).
    device: "auto" (GPU when present) | "cpu" | "cuda". precision: "float64" | "float32" (faster
    kernels of svcca/procrustes/cka/rsa, agreement NULL_TOLERANCE) | "auto" (float64 when cheap,
    see featsim._null_kernels.AutoPrecision).
    method: "auto" | "fast" (error if none) | "loop" (recompute the metric on each permuted Y).
    threads: CPU threads (default `default_threads()`). The observed value is always the float64 metric.
    sequential_h: stop after h null values >= observed (p = h / draws), at most `n_permutations` draws;
    None draws all of them. Ignored for an exact null.
    """
    X, Y = paired_arrays(X, Y)
    n = X.shape[0]
    if not (isinstance(n_permutations, (int, np.integer)) and n_permutations >= 1):
        raise ValueError(f"config key 'null.permutations': must be a positive integer, got {n_permutations!r}")
    if precision not in ("auto", "float32", "float64"):
        raise ValueError(f"config key 'null.precision': {precision!r} is not one of auto, float32, float64")
    if method not in ("auto", "fast", "loop"):
        raise ValueError(f"method must be auto, fast or loop, got {method!r}")
    if sequential_h is not None and (isinstance(sequential_h, bool) or not isinstance(sequential_h, (int, np.integer))
                                     or sequential_h < 1):
        raise ValueError(f"config key 'null.sequential_h': must be a positive integer or null, got {sequential_h!r}")
    threads = int(threads or default_threads())
    backend = resolve_backend(device)

    kernel = None
    if isinstance(metric, str):
        registered: Metric = get_metric(metric)
        options = registered.resolve_options(options)
        registered.check_pairs(n)
        name = metric
        prepared = None if method == "loop" else kernels.prepare(name, X, Y, options, backend, precision,
                                                                  n_permutations=int(n_permutations))
        observed_result = prepared[0] if prepared else registered.compute(X, Y, **options)
        kernel = prepared[1] if prepared else None
        observed, details = observed_result.score, dict(observed_result.details)
        score_one: Callable = lambda a, b: registered(a, b, **options)  # noqa: E731
    else:
        if options:
            raise ValueError("options apply to registry metrics only; bind them into the callable instead")
        name = getattr(metric, "__name__", "callable")
        observed, details, score_one = float(metric(X, Y)), {}, metric
    if kernel is None and method == "fast":
        raise ValueError(f"metric {name!r} has no fast null kernel for these inputs; use method='loop' or 'auto'")
    if name in SVCCA_FAMILY:
        check_svcca_dimensions(details["k_a"], details["k_b"], n, name)
    exact = is_exact(n, int(n_permutations))
    n_draws = math.factorial(n) - 1 if exact else int(n_permutations)
    stop_after = None if exact or sequential_h is None else int(sequential_h)
    threshold = exceedance_threshold(observed, NULL_TOLERANCE[_kernel_precision(kernel)])

    if kernel is not None:
        null = _run_kernel(kernel, n, n_draws, seed, threads, progress, threshold, stop_after)
        used_precision = _kernel_precision(kernel)
        used_method, used_device = "fast", str(kernel.backend.device)
        used_backend = kernels.backend_name(kernel)
    else:
        null = _run_loop(score_one, X, Y, n_draws, seed, progress, threshold, stop_after)
        used_precision, used_method, used_device, used_backend = "float64", "loop", "cpu", "loop"
    tolerance = NULL_TOLERANCE[used_precision]
    p_value, z, null_mean, null_std = _summary(observed, null, tolerance)
    sequential_stopped = stop_after is not None and int(np.count_nonzero(null >= threshold)) >= stop_after
    if sequential_stopped:
        p_value = stop_after / null.size  # Besag-Clifford: h exceedances in L draws
    exact_moments = getattr(kernel, "moments", None)
    rounding = null_spread_is_rounding(null_std, null_mean, tolerance)
    tail = None if exact else fit_tail(observed, null, exact_moments, rounding)  # an exact p needs no tail

    flags = []
    if null_spread_is_rounding(null_std, null_mean, tolerance):
        flags.append("null_sd_below_tolerance")
        log.warning("%s: null sd %.3g is within the %s rounding tolerance %.0e: z not computed", name, null_std,
                    used_precision, tolerance)
    if name in SVCCA_FAMILY and n < FEW_PAIRS_FACTOR * max(details["k_a"], details["k_b"]):
        flags.append("n_lt_5k")
        log.warning("%s: %d pairs < %d x %d components kept: CCA of unrelated sets is near 1 in this regime",
                    name, n, FEW_PAIRS_FACTOR, max(details["k_a"], details["k_b"]))
    return NullResult(metric=name, observed=observed, null=null, p_value=p_value, z=z, null_mean=null_mean,
                      null_std=null_std, n_pairs=n, n_permutations=int(null.size), seed=int(seed),
                      details=details, flags=tuple(flags), method=used_method, device=used_device,
                      backend=used_backend, precision=used_precision, tolerance=tolerance, exact=exact,
                      p_min=smallest_p(n, n_draws), exact_moments=exact_moments, tail=tail,
                      sequential_h=stop_after, max_permutations=n_draws, sequential_stopped=sequential_stopped)


def _kernel_precision(kernel) -> str:
    """The precision a kernel's null values carry (float64 for the plain loop)."""
    return getattr(kernel, "precision", "float64") if kernel is not None else "float64"


def default_threads() -> int:
    """CPU threads the null may use: OMP_NUM_THREADS when set, else the CPUs this process may run on."""
    configured = os.environ.get("OMP_NUM_THREADS", "")
    if configured.isdigit() and int(configured) > 0:
        return int(configured)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
