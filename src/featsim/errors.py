"""Errors that name the config key or file a user must fix."""


class ConfigError(ValueError):
    """A config value is wrong; `key` is its dotted path (e.g. `models.B.sae.id`)."""

    def __init__(self, key: str, message: str):
        self.key = key
        super().__init__(f"config key '{key}': {message}")


def reject_unknown_keys(values: dict, allowed, section: str) -> None:
    """Raise ConfigError naming the first key of a config slice that its dataclass does not know."""
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        raise ConfigError(f"{section}.{unknown[0]}", f"unknown key (allowed: {', '.join(sorted(allowed))})")
