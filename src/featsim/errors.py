"""Errors that name the config key or file a user must fix."""


class ConfigError(ValueError):
    """A config value is wrong; `key` is its dotted path (e.g. `models.B.sae.id`)."""

    def __init__(self, key: str, message: str):
        self.key = key
        super().__init__(f"config key '{key}': {message}")
