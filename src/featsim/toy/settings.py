"""Build the toy dataclass configs from config slices, with errors that name the real config key."""

from __future__ import annotations

from dataclasses import fields
from typing import Any, TypeVar

from featsim.errors import ConfigError

T = TypeVar("T")


def config_from_dict(cls: type[T], values: dict[str, Any], key: str) -> T:
    """`cls(**values)`; unknown keys and invalid values raise ConfigError naming `key` (e.g. `models.A.lm.toy`).

    `cls.CONFIG_KEY` is the placeholder key its own checks use; it is replaced by `key`.
    """
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"{key}.{unknown[0]}", f"unknown key (allowed: {', '.join(sorted(names))})")
    try:
        return cls(**values)
    except ConfigError as error:
        message = str(error).removeprefix(f"config key '{error.key}': ")
        raise ConfigError(error.key.replace(cls.CONFIG_KEY, key, 1), message) from None
