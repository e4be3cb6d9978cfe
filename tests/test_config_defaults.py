"""One owner for each default: every typed config dataclass defaults to what the schema says.

A dataclass default that differs from the schema's would make the library (called directly) and the
workflow (validated config) compute different things from the same omitted key.
"""

from __future__ import annotations

import dataclasses

import pytest

from featsim.browser import BrowserSettings
from featsim.config import load_schema
from featsim.correlate import CorrelationConfig
from featsim.labels import LabelsConfig
from featsim.pairing import PairingVariant
from featsim.scoring import NullConfig
from featsim.semantic import SemanticConfig
from featsim.steering_config import SteeringConfig
from featsim.tokens import DataConfig, MaskConfig
from featsim.toy.corpus import ToyCorpusConfig
from featsim.toy.lm import ToyLMConfig
from featsim.toy.sae import ToySAEConfig

SCHEMA = load_schema()

SLICES = [  # (dataclass, schema path of its slice, fields whose name differs in the config: {field: key})
    (CorrelationConfig, ("correlation",), {}),
    (LabelsConfig, ("labels",), {}),
    (SemanticConfig, ("semantic",), {}),
    (PairingVariant, ("pairings", "*"), {}),
    (SteeringConfig, ("steering",), {}),
    (NullConfig, ("null",), {}),
    (BrowserSettings, ("report",), {}),
    (DataConfig, ("data",), {}),
    (MaskConfig, ("data", "mask"), {}),
    (ToyCorpusConfig, ("data", "toy"), {}),
    (ToyLMConfig, ("models", "*", "lm", "toy"), {}),
    (ToySAEConfig, ("models", "*", "sae", "toy"), {}),
]


def _resolve(node: dict) -> dict:
    while "$ref" in node:
        target = SCHEMA
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def _alternatives(node: dict) -> list[dict]:
    node = _resolve(node)
    branches = node.get("oneOf") or node.get("anyOf") or []
    return [node] + [alt for branch in branches for alt in _alternatives(branch)]


def schema_slice(path: tuple[str, ...]) -> dict:
    """The properties of a config slice (`*`: any entry of a mapping), merged over oneOf/anyOf branches."""
    nodes = [SCHEMA]
    for part in path:
        found = []
        for node in nodes:
            for alt in _alternatives(node):
                child = alt.get("additionalProperties") if part == "*" else alt.get("properties", {}).get(part)
                if isinstance(child, dict):
                    found.append(child)
        nodes = found
    properties = {}
    for node in nodes:
        for alt in _alternatives(node):
            properties.update(alt.get("properties", {}))
    assert properties, f"schema has no slice at {'.'.join(path)}"
    return properties


def _default(field: dataclasses.Field):
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


def _comparable(value):
    if isinstance(value, tuple):
        return [_comparable(v) for v in value]
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    return value


@pytest.mark.parametrize("config_class, path, renamed", SLICES, ids=[c[0].__name__ for c in SLICES])
def test_dataclass_defaults_equal_schema_defaults(config_class, path, renamed):
    properties = schema_slice(path)
    compared, disagreements = 0, {}
    for field in dataclasses.fields(config_class):
        key = renamed.get(field.name, field.name)
        default = _default(field)
        if key not in properties or "default" not in properties[key] or default is dataclasses.MISSING:
            continue
        compared += 1
        if dataclasses.is_dataclass(default):
            continue  # a nested slice: compared by its own row
        if _comparable(default) != properties[key]["default"]:
            disagreements[key] = (default, properties[key]["default"])
    assert compared, f"{config_class.__name__} shares no defaulted key with the schema at {'.'.join(path)}"
    assert disagreements == {}, f"{config_class.__name__} (dataclass, schema): {disagreements}"
