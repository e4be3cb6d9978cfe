"""The `steering` config slice as a typed dataclass: importable without torch (the Snakefile and
`featsim validate` check it at start-up)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from featsim.errors import ConfigError, reject_unknown_keys

POSITIONS_LAST = "last"
TRANSFER_METHODS = ("pairing", "procrustes")


@dataclass(frozen=True)
class SteeringConfig:
    """The `steering` config slice (defaults as in workflow/schemas/config.schema.yaml)."""

    comparisons: tuple[str, ...] = ()  # comparisons to steer (none: the stage is off)
    concepts: tuple[str, ...] | None = None  # concept ids (default: every semantic concept)
    layer_pairs: tuple[tuple[int, int], ...] | None = None  # cells steered (default: every cell of the comparison)
    alphas: tuple[float, ...] = (0.25, 0.5, 1.0)  # multiples of the hook's typical activation norm
    test_alpha: float = 0.5  # the alpha (one of alphas) at which transfer nulls are drawn
    prompts: int = 16  # held-out token sequences used as prompts
    prompt_length: int = 16  # tokens of each prompt (its first tokens)
    positions: str | int = POSITIONS_LAST  # "last", or k: every position from k on
    null_draws: int = 400  # random directions / random pairings per test
    transfer: tuple[str, ...] = TRANSFER_METHODS  # how a vector is carried from A to B
    max_kl: float = 1.0  # nats: a steered run whose mean KL exceeds this broke the model
    agreement_permutations: int = 10000  # label permutations of the concept x concept agreement matrix
    responders: int = 10  # later-layer latents listed per model and tested for paired overlap (downstream effects)
    seed: int = 0
    batch_size: int = 4096  # steered sequences per forward pass
    device: str = "auto"  # auto | cpu | cuda

    def __post_init__(self) -> None:
        for key in ("prompts", "prompt_length", "null_draws", "agreement_permutations", "responders", "batch_size"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"steering.{key}", f"must be a positive integer, got {value!r}")
        if self.prompt_length < 2:
            raise ConfigError("steering.prompt_length", f"must be at least 2, got {self.prompt_length}")
        if not self.alphas or any(not math.isfinite(a) or a <= 0 for a in self.alphas):
            raise ConfigError("steering.alphas", f"must be a non-empty list of positive numbers, got {list(self.alphas)}")
        if self.test_alpha not in self.alphas:
            raise ConfigError("steering.test_alpha", f"{self.test_alpha} is not one of steering.alphas {list(self.alphas)}")
        if not self.max_kl > 0:
            raise ConfigError("steering.max_kl", f"must be positive, got {self.max_kl!r}")
        unknown = sorted(set(self.transfer) - set(TRANSFER_METHODS))
        if unknown or not self.transfer:
            raise ConfigError("steering.transfer", f"{unknown or 'empty'}: choose from {list(TRANSFER_METHODS)}")
        steered_positions(self.prompt_length, self.positions)  # validates the positions key

    @classmethod
    def from_config(cls, values: Mapping[str, Any] | None) -> "SteeringConfig":
        """Build from the `steering` config slice; unknown keys are an error."""
        values = dict(values or {})
        reject_unknown_keys(values, cls.__dataclass_fields__, "steering")
        for key in ("comparisons", "concepts", "alphas", "transfer"):
            if values.get(key) is not None:
                values[key] = tuple(values[key])
        if "alphas" in values:
            values["alphas"] = tuple(float(a) for a in values["alphas"])
        if "test_alpha" in values:
            values["test_alpha"] = float(values["test_alpha"])
        if values.get("layer_pairs") is not None:
            values["layer_pairs"] = tuple((int(la), int(lb)) for la, lb in values["layer_pairs"])
        return cls(**values)


def steered_positions(prompt_length: int, positions: str | int) -> np.ndarray:
    """bool [prompt_length]: the prompt positions that get alpha * v."""
    mask = np.zeros(int(prompt_length), dtype=bool)
    if positions == POSITIONS_LAST:
        mask[-1] = True
        return mask
    if isinstance(positions, bool) or not isinstance(positions, int) or not 0 <= positions < prompt_length:
        raise ConfigError("steering.positions", f"must be 'last' or a position in [0, prompt_length = "
                                                f"{prompt_length}), got {positions!r}")
    mask[positions:] = True
    return mask
